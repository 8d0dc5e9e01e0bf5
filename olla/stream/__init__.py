"""An answer on its way to a client, the same for every API: the runner's events become neutral
deltas (`assembler`), each API renders them (`ollama`, `openai`), an encoder frames the lines
(`encoders`: NDJSON or server-sent events). Nothing here does I/O; the daemon's writer
(`olla.server.writer`) and a runner's direct stream (`olla.runner.direct`) send the bytes."""
