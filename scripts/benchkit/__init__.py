"""The parts of scripts/bench, by job.

options (what the command line sets), servers (how olla, llama-server and llama-cpp-python's
server are started, stopped and sent a request), load (a streamed request timed on the client
side, the other load on the machine), prompts (the prompts and the scenarios' long texts),
scenarios (levels of concurrency, shared prefix, long-prompt interference), report (tables,
Markdown, the file --out writes), rounds (every server measured in alternating rounds).
"""
