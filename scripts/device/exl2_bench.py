#!/usr/bin/env python3
"""On the GPU machine: olla serving an EXL2 model against a plain script that drives
ExLlamaV2DynamicGenerator directly, same model, prompts, streams and generator settings.

The model is a random llama of SmolLM2-135M's shape converted to 4.0 bpw with exllamav2's own
converter (exl2_probe.py's steps; kept in /tmp/exl2 while the machine stays lent). Both are
loaded at once (the model takes under 1 GB) and measured in pairs, one right after the other in
alternating order, because the lent machine's speed drifts by 2x over minutes: N clients (olla:
streaming /api/generate, raw, greedy) or N jobs enqueued at once (the script), each of 128 new
tokens; aggregate tokens/s over the wall time, and the decode rate exllamav2 itself timed
(tokens over time_generate, mean over the requests), which leaves out everything around the
generator. Also olla's memory estimate against what its runner measured after load. Run by
scripts/device/exl2_bench.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from exl2_probe import TOKENIZER, WORK, make_hf_model  # noqa: E402

from olla.testing import Daemon, free_port  # noqa: E402

PROMPTS = [
    "The history of the lighthouse at {i} begins",
    "Write a short story about robot number {i} who",
    "Lecture notes {i}: the water cycle explained. First,",
    "Recipe {i}: how to bake bread at home. Start by",
]


# exllamav2's per-layer error measurement of the random model, kept from an earlier lend
MEASUREMENT = Path(".exl2/measurement.json")


def prompt(i: int) -> str:
    return PROMPTS[i % len(PROMPTS)].format(i=i)


def convert(exl2: Path) -> None:
    """A 4.0 bpw EXL2 of a random SmolLM2-135M-shape llama, once per lease."""
    if (exl2 / "config.json").exists():
        return
    hf, work = WORK / "hf", WORK / "work"
    shutil.rmtree(WORK, ignore_errors=True)
    started = time.perf_counter()
    make_hf_model(hf)
    work.mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "exllamav2.conversion.convert_exl2",
        "-i",
        str(hf),
        "-o",
        str(work),
        "-cf",
        str(exl2),
        "-b",
        "4.0",
        "-r",
        "8",
        "-mr",
        "4",
        "-l",
        "256",
        "-ml",
        "256",
    ]
    if MEASUREMENT.exists():  # a measurement carried from an earlier lend skips that pass
        command += ["-m", str(MEASUREMENT)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=480)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:])
        raise SystemExit("conversion failed")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / name, exl2 / name)
    if (work / "measurement.json").exists() and "OUT" in os.environ:
        shutil.copy(work / "measurement.json", Path(os.environ["OUT"]) / "measurement.json")
    print(f"converted in {time.perf_counter() - started:.0f} s")


class Plain:
    """The plain script: the generator as olla's runner makes it, jobs enqueued directly."""

    def __init__(self, model_dir: Path, num_ctx: int, streams: int) -> None:
        import exllamav2.attn
        import torch
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
        from exllamav2.generator import ExLlamaV2DynamicGenerator

        paged = bool(exllamav2.attn.has_flash_attn)
        streams = streams if paged else 1
        config = ExLlamaV2Config(str(model_dir))
        config.max_seq_len = num_ctx
        self.model = ExLlamaV2(config)
        tokens = -(-num_ctx * streams // 256) * 256
        self.cache = ExLlamaV2Cache(self.model, max_seq_len=tokens, lazy=True)
        self.model.load_autosplit(self.cache)
        self.tokenizer = ExLlamaV2Tokenizer(config)
        self.generator = ExLlamaV2DynamicGenerator(
            model=self.model,
            cache=self.cache,
            tokenizer=self.tokenizer,
            max_batch_size=streams,
            paged=paged,
        )
        self.generator.warmup()
        self.torch = torch

    def run(self, n: int, max_new: int, tag: str) -> tuple[float, float]:
        """Aggregate tokens/s, and the mean decode rate exllamav2 timed per job."""
        from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

        settings = ExLlamaV2Sampler.Settings.greedy()
        jobs = [
            ExLlamaV2DynamicJob(
                input_ids=self.tokenizer.encode(tag + prompt(i), add_bos=True),
                max_new_tokens=max_new,
                gen_settings=settings,
                stop_conditions=[],
            )
            for i in range(n)
        ]
        started = time.perf_counter()
        for job in jobs:
            self.generator.enqueue(job)
        tokens, decode = 0, []
        while self.generator.num_remaining_jobs():
            for result in self.generator.iterate():
                if result.get("eos"):
                    new = int(result.get("new_tokens", 0))
                    tokens += new
                    decode.append(new / max(float(result.get("time_generate", 0.0)), 1e-9))
        return tokens / (time.perf_counter() - started), statistics.mean(decode)

    def close(self) -> None:
        self.model.unload()
        del self.generator, self.cache, self.model
        self.torch.cuda.empty_cache()


class Olla:
    """`olla serve` with the EXL2 model created from its directory."""

    def __init__(self, model_dir: Path, num_ctx: int, streams: int) -> None:
        host = f"127.0.0.1:{free_port()}"
        self.work = Path(tempfile.mkdtemp())
        self.env = {
            **os.environ,
            "OLLA_HOST": host,
            "OLLA_MODELS": str(self.work / "models"),
            "OLLA_NUM_PARALLEL": str(streams),
            "OLLA_CONTEXT_LENGTH": str(num_ctx),
            "OLLA_KEEP_ALIVE": "-1",
            "XDG_CONFIG_HOME": str(self.work / "config"),
        }
        self.daemon = Daemon(host=host, env=self.env, log_path=self.work / "serve.log")
        self.daemon.start(timeout=60)
        self.url = self.daemon.base_url
        (self.work / "Modelfile").write_text(f"FROM {model_dir}\n")
        done = subprocess.run(
            [sys.executable, "-m", "olla", "create", "exl2", "-f", str(self.work / "Modelfile")],
            env=self.env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"olla create failed: {done.stdout[-800:]} {done.stderr[-800:]}")

    async def one(
        self, session: aiohttp.ClientSession, text: str, max_new: int
    ) -> tuple[int, float]:
        body = {
            "model": "exl2",
            "prompt": text,
            "raw": True,
            "stream": True,
            "options": {"temperature": 0, "num_predict": max_new, "repeat_penalty": 1},
        }  # plain greedy, as the script's
        async with session.post(self.url + "/api/generate", json=body) as r:
            if r.status != 200:
                raise SystemExit(f"olla answered {r.status}: {await r.text()}")
            count, decode = 0, 0.0
            async for line in r.content:
                data = json.loads(line)
                if "error" in data:
                    raise SystemExit(f"olla: {data['error']}")
                if data.get("done"):
                    count = int(data["eval_count"])
                    decode = count / max(int(data["eval_duration"]) / 1e9, 1e-9)
            return count, decode

    async def run_async(self, n: int, max_new: int, tag: str) -> tuple[float, float]:
        timeout = aiohttp.ClientTimeout(total=900)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await self.one(session, "warm up", 4)  # loads the model
            started = time.perf_counter()
            done = await asyncio.gather(
                *(self.one(session, tag + prompt(i), max_new) for i in range(n))
            )
            rate = sum(count for count, _ in done) / (time.perf_counter() - started)
            return rate, statistics.mean(decode for _, decode in done)

    def run(self, n: int, max_new: int, tag: str) -> tuple[float, float]:
        """Aggregate tokens/s, and the mean decode rate exllamav2 timed per request."""
        return asyncio.run(self.run_async(n, max_new, tag))

    def memory(self) -> dict[str, object]:
        async def ps() -> dict[str, object]:
            async with aiohttp.ClientSession() as s, s.get(self.url + "/api/ps") as r:
                return dict(await r.json())

        return asyncio.run(ps())

    def close(self) -> None:
        self.daemon.stop(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", default="1,8,32")
    parser.add_argument("--pairs", type=int, default=5, help="olla/script pairs per stream count")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--num-ctx", type=int, default=1024)
    parser.add_argument("--convert-only", action="store_true")
    args = parser.parse_args()
    exl2 = WORK.parent / "exl2-model"
    convert(exl2)
    if args.convert_only:
        return 0
    streams = [int(s) for s in args.streams.split(",")]
    parallel = max(streams)
    olla = Olla(exl2, args.num_ctx, parallel)
    servers: dict[str, Olla | Plain] = {"olla": olla}
    try:
        servers["plain"] = Plain(exl2, args.num_ctx, parallel)
        for who, server in servers.items():
            # untimed, as long as the timed ones: exllamav2 tunes its kernels for each new shape
            # on first use (a first 1-stream run measured 25-30 against 200 tok/s)
            server.run(1, args.max_tokens, f"[{who} warm-up] ")
            server.run(min(8, parallel), args.max_tokens, f"[{who} warm-up] ")
        models = olla.memory()["models"]
        assert isinstance(models, list) and len(models) == 1, models
        print("olla memory:", json.dumps(models[0]["memory"]), flush=True)
        rows: list[tuple[float, ...]] = []
        for n in streams:
            rates: dict[str, list[float]] = {"olla": [], "plain": []}
            decodes: dict[str, list[float]] = {"olla": [], "plain": []}
            ratios = []
            for pair in range(args.pairs):
                order = ("olla", "plain") if pair % 2 == 0 else ("plain", "olla")
                for who in order:
                    rate, decode = servers[who].run(n, args.max_tokens, f"[{who} {n} {pair}] ")
                    rates[who].append(rate)
                    decodes[who].append(decode)
                ratios.append(rates["olla"][-1] / rates["plain"][-1])
                print(
                    f"streams={n} pair {pair + 1}: olla {rates['olla'][-1]:.1f} "
                    f"(decode {decodes['olla'][-1]:.1f}), plain {rates['plain'][-1]:.1f} "
                    f"(decode {decodes['plain'][-1]:.1f}) tok/s",
                    flush=True,
                )
            rows.append(
                (
                    n,
                    *(statistics.median(rates[w]) for w in ("olla", "plain")),
                    statistics.median(ratios),
                    *(statistics.median(decodes[w]) for w in ("olla", "plain")),
                )
            )
    finally:
        for server in servers.values():
            server.close()
    print(
        "\n| streams | olla tok/s | plain script tok/s | olla / plain (median of pairs) "
        "| decode olla / plain |"
    )
    print("|---:|---:|---:|---:|---:|")
    for count, rate_olla, rate_plain, ratio, d_olla, d_plain in rows:
        print(
            f"| {count:.0f} | {rate_olla:.1f} | {rate_plain:.1f} | {ratio:.2f} "
            f"| {d_olla:.1f} / {d_plain:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
