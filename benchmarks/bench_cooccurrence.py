"""Co-occurrence memory as the tokens double: one dashboards pass (random TopK dictionary, window co-occurrence)
per token count, each in a fresh process, printing one JSON line with its peak RSS and wall time.

The counting mode follows ``DashboardConfig`` (``--dense-max``, ``--host-max``, ``--pass-bytes``): at 40,000
latents the defaults spill the firing entries and count them in passes. Any checkout whose ``DashboardConfig``
has the first two fields can be measured by putting it first on ``PYTHONPATH`` (``--pass-bytes 0`` leaves the
third field out), e.g. an older one whose counts above ``host_cooccurrence_max`` were a growing sparse sum;
``--unit none`` measures the pass without co-occurrence.

    python benchmarks/bench_cooccurrence.py --d-sae 40000 --tokens 8192 16384 --threads 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

RUN = """
import json, os, resource, sys, time, torch
from interp.cache.store import TokenChunk
from interp.features.dashboards import DashboardConfig, feature_dashboards
d_in, d_sae, k, n_tokens, chunk, context, threads, dense_max, host_max, pass_bytes = map(int, sys.argv[1:11])
unit = None if sys.argv[11] == "none" else sys.argv[11]
torch.set_num_threads(threads)

class RandomTopK:
    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.d_in, self.d_sae = d_in, d_sae
        self.W_enc = torch.randn(d_in, d_sae, generator=gen) / d_in ** 0.5
        self.W_dec = self.W_enc.T.contiguous()
    def encode(self, x):
        top = (x @ self.W_enc).topk(k, dim=1)
        return torch.zeros(len(x), d_sae).scatter_(1, top.indices, top.values.relu())

def chunks():
    for start in range(0, n_tokens, chunk):
        gen = torch.Generator().manual_seed(start)
        rows = torch.arange(start, start + chunk)
        yield TokenChunk(torch.randn(chunk, d_in, generator=gen), torch.randint(0, 50257, (chunk,), generator=gen),
                         rows // context, rows % context)

fields = dict(dense_cooccurrence_max=dense_max, host_cooccurrence_max=host_max)
if pass_bytes:
    fields["cooccurrence_pass_bytes"] = pass_bytes
start = time.perf_counter()
data = feature_dashboards(RandomTopK(), chunks(), DashboardConfig(cooccurrence=unit, **fields))
print(json.dumps({"tokens": n_tokens, "d_sae": d_sae, "wall_s": round(time.perf_counter() - start, 1),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "kept_pairs": None if unit is None else int(data.cooccurrence.nnz), "n_blocks": data.n_blocks,
                  "load_average": os.getloadavg()[0], **fields}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-in", type=int, default=768)
    parser.add_argument("--d-sae", type=int, default=40_000)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--chunk", type=int, default=2048, help="tokens per chunk (whole sequences)")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--unit", default="window", choices=("token", "window", "sequence", "none"))
    parser.add_argument("--dense-max", type=int, default=16_384)
    parser.add_argument("--host-max", type=int, default=32_768)
    parser.add_argument("--pass-bytes", type=int, default=1 << 30, help="0: leave the field at its default/absent")
    args = parser.parse_args()
    for n in args.tokens:
        argv = [args.d_in, args.d_sae, args.k, n, args.chunk, args.context, args.threads, args.dense_max,
                args.host_max, args.pass_bytes, args.unit]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        with tempfile.TemporaryDirectory() as cwd:  # imports from PYTHONPATH, not from the current folder
            out = subprocess.run([sys.executable, "-c", RUN, *map(str, argv)], capture_output=True, text=True,
                                 env=env, cwd=cwd)
        if out.returncode:
            sys.exit(out.stderr)
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
