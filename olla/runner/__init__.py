"""A runner: one process per loaded model (`python -m olla.runner SPEC_JSON [HANDOFF_FD]`),
hosting its backend and engine and serving them to the daemon over a private unix socket.

`build` loads the model and makes the engine, `serve` runs the loop, `intake` checks requests
as they arrive, `replies` turns step outputs into events, `direct` writes a client's stream into
its socket. A crash here fails this model's requests only; the daemon sees the exit.
"""
