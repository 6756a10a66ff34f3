"""Flag groups shared by several subcommands (one definition, so they cannot drift)."""

from __future__ import annotations

import argparse


def add_pair_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--student", required=True, help="local HF model directory of the student")
    g.add_argument("--teacher", required=True, help="local HF model directory of the teacher")
    g.add_argument("--student-dtype", default="float32", help="float32 | bfloat16 | float16")
    g.add_argument("--teacher-dtype", default="float32", help="float32 | bfloat16 | float16")
    g.add_argument("--student-device", default="cpu", help="cpu | cuda | cuda:N | auto")
    g.add_argument("--teacher-device", default="cpu", help="cpu | cuda | cuda:N | auto")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="run modelling code shipped in the model directories (off by default)")


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--n-samples", type=int, default=4, help="completions per prompt (default 4)")
    g.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (default 1.0)")
    g.add_argument("--max-new-tokens", type=int, default=256, help="completion budget (default 256)")
    g.add_argument("--batch-size", type=int, default=16, help="rows per generation batch")
    g.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    g.add_argument("--raw-prompt", action="store_true",
                   help="feed prompts as raw text even when the student has a chat template")
