"""`shoal batch run|load`: registered by the `shoal` command. Cheap to import; the work is in the handlers."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from typing import Any

BALANCE_CHOICES = ("round-robin", "least-inflight")
GRADE_CHOICES = ("exact", "number", "code")


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    import json

    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _budget(text: str) -> float:
    value = float(text)
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError("must be >= 0 (or inf)")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--endpoint",
        action="append",
        required=True,
        metavar="URL",
        help="OpenAI-compatible base URL (http://host:port or .../v1); repeat to balance over several",
    )
    p.add_argument(
        "--out", metavar="OUT.jsonl", help="output JSONL (appended; a re-run skips ids already in it)"
    )
    p.add_argument("--model", help="model name (default: the first one /v1/models lists)")
    p.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="per-attempt timeout (default 600)"
    )
    p.add_argument("--max-attempts", type=int, metavar="N", help="attempts per request, first included")
    p.add_argument(
        "--retry-budget",
        type=_budget,
        default=1.0,
        metavar="RATIO",
        help="retries allowed in the whole run: 50 + RATIO x requests (default 1.0; 'inf' = no cap)",
    )
    p.add_argument(
        "--backoff-base", type=float, default=0.5, metavar="S", help="first backoff ceiling (default 0.5)"
    )
    p.add_argument(
        "--backoff-cap", type=float, default=30.0, metavar="S", help="largest backoff (default 30)"
    )
    p.add_argument("--stream", action="store_true", help="stream responses and measure time to first token")
    p.add_argument(
        "--balance",
        choices=BALANCE_CHOICES,
        default="round-robin",
        help="endpoint choice (default round-robin)",
    )
    p.add_argument(
        "--api-key", default=None, help="bearer token; use $SHOAL_API_KEY (argv is visible to all)"
    )
    p.add_argument(
        "--param",
        action="append",
        type=_param,
        default=[],
        metavar="KEY=VALUE",
        help="default request parameter, VALUE as JSON when it parses (e.g. max_tokens=64); repeatable",
    )
    p.add_argument("--max-tokens", type=int, help="shorthand for --param max_tokens=N")
    p.add_argument(
        "--grade", choices=GRADE_CHOICES, help="grade responses against 'expected': exact | number | code"
    )
    p.add_argument("--fail-fast", action="store_true", help="stop at the first malformed input line")
    p.add_argument("--report-json", metavar="PATH", help="also write the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    p.add_argument("--fsync", action="store_true", help="fsync after every output line (power-loss safety)")
    p.add_argument("--seed", type=int, help="seed of the retry jitter")


def register(subparsers: Any) -> None:
    batch = subparsers.add_parser(
        "batch",
        help="batch client and open-loop load generator",
        description="Push a JSONL file of prompts through OpenAI-compatible endpoints.",
    )
    sub = batch.add_subparsers(dest="batch_command", metavar="SUBCOMMAND")
    sub.required = True

    run = sub.add_parser(
        "run", help="send every line of INPUT.jsonl (closed loop, bounded concurrency; resumable)"
    )
    run.add_argument("input", metavar="INPUT.jsonl")
    run.add_argument(
        "--concurrency", "-c", type=int, default=16, metavar="N", help="requests in flight (default 16)"
    )
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="on resume, run ids whose earlier record is an error again",
    )
    _common(run)
    run.set_defaults(handler=_run_handler)
    _register_load(sub)


def _register_load(sub: Any) -> None:
    load = sub.add_parser(
        "load", help="open loop: send at a requests/s schedule regardless of response times"
    )
    source = load.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--trace",
        metavar="SPEC|FILE",
        help="a trace file or a shape: "
        "constant:rps=R,duration=S | step:rps=R1/R2/...,hold=S | ramp:from=R,to=R,duration=S | "
        "sinusoid:mean=R,amplitude=A,period=S,duration=S",
    )
    load.add_argument("--input", metavar="INPUT.jsonl", help="prompts to cycle through (default: --prompt)")
    load.add_argument("--prompt", default="Say hello.", help="prompt when no --input is given")
    load.add_argument("--arrivals", choices=("uniform", "poisson"), default="uniform")
    load.add_argument("--schedule-seed", type=int, default=0, help="seed of Poisson arrivals")
    load.add_argument(
        "--max-requests", type=int, default=100_000, metavar="N", help="stop after N sends (default 100000)"
    )
    load.add_argument(
        "--max-duration", type=float, default=3600.0, metavar="S", help="stop sending after S seconds"
    )
    load.add_argument(
        "--max-inflight",
        type=int,
        default=4096,
        metavar="N",
        help="a due send is dropped (and counted) when N are in flight (default 4096)",
    )
    load.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="after the last send, wait at most S for requests in flight",
    )
    _replay_flags(load, source)
    _common(load)
    load.set_defaults(handler=_load_handler)


def _replay_flags(load: argparse.ArgumentParser, source: Any) -> None:
    source.add_argument(
        "--replay",
        metavar="FILE",
        help="a request trace (CSV or JSONL: timestamp, prompt tokens, output tokens; Azure and BurstGPT "
        "column names too): each request at its own instant with its own lengths; implies --stream",
    )
    load.add_argument(
        "--speedup", type=float, default=1.0, metavar="X", help="replay X times faster (default 1)"
    )
    load.add_argument(
        "--window",
        default=":",
        metavar="START:END",
        help="replay only seconds START..END of the trace (either may be empty; default: all)",
    )
    load.add_argument(
        "--time-unit",
        choices=("s", "ms"),
        default="s",
        help="unit of numeric timestamps in the replayed trace (default s)",
    )


def _base_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from shoal_batch.balancer import Balance
    from shoal_batch.grading import GradeMode

    params = dict(args.param)
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    kwargs: dict[str, Any] = {
        "endpoints": list(args.endpoint),
        "out": args.out,
        "model": args.model,
        "timeout_s": args.timeout,
        "retry_budget": args.retry_budget,
        "backoff_base_s": args.backoff_base,
        "backoff_cap_s": args.backoff_cap,
        "stream": args.stream,
        "balance": Balance(args.balance),
        "api_key": resolve_api_key(args.api_key, os.environ, _warn),
        "grade": GradeMode(args.grade) if args.grade else None,
        "fail_fast": args.fail_fast,
        "params": params,
        "progress": not args.no_progress and _stderr_is_tty(),
        "fsync": args.fsync,
        "seed": args.seed,
    }
    if args.max_attempts is not None:
        kwargs["max_attempts"] = args.max_attempts
    return kwargs


API_KEY_ENV = ("SHOAL_API_KEY", "OPENAI_API_KEY")


def resolve_api_key(flag: str | None, environ: Mapping[str, str], warn: Callable[[str], None]) -> str | None:
    """The API key: from the environment first (not visible in `ps`), else --api-key with a warning."""
    for name in API_KEY_ENV:
        if environ.get(name):
            if flag:
                warn(f"--api-key ignored: ${name} is set and is used instead")
            return environ[name]
    if flag:
        warn(
            "--api-key is visible to every user of this machine (ps, /proc/PID/cmdline); "
            "set $SHOAL_API_KEY instead"
        )
    return flag or None


def _warn(message: str) -> None:
    import sys

    print(f"shoal batch: warning: {message}", file=sys.stderr, flush=True)


def _stderr_is_tty() -> bool:
    import sys

    return sys.stderr.isatty()


def _run_handler(args: argparse.Namespace) -> int:
    from shoal_batch.config import BatchConfig

    config = BatchConfig(
        input=args.input, concurrency=args.concurrency, retry_failed=args.retry_failed, **_base_kwargs(args)
    )
    return _execute(config, args, load=False)


def _load_replay(args: argparse.Namespace) -> Any:
    """The replay plan of --replay; raises ValueError or OSError with a readable message."""
    from shoal_batch.replay import load_replay, parse_window
    from shoal_batch.trace_file import TimeUnit

    return load_replay(
        args.replay,
        window=parse_window(args.window),
        speedup=args.speedup,
        max_requests=args.max_requests,
        max_duration=args.max_duration,
        unit=TimeUnit(args.time_unit),
    )


def _load_handler(args: argparse.Namespace) -> int:
    import sys

    from shoal_batch.config import LoadConfig
    from shoal_batch.schedule import Arrivals, TraceError, load_curve

    curve = replay = None
    try:
        if args.replay is not None:
            replay = _load_replay(args)
            args.stream = True  # a replay measures time to first token
        else:
            curve = load_curve(args.trace)
    except (TraceError, ValueError, OSError) as exc:
        print(
            f"shoal batch load: bad --{'replay' if args.replay else 'trace'}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        return 2
    config = LoadConfig(
        input=args.input,
        prompt=args.prompt,
        curve=curve,
        replay=replay,
        arrivals=Arrivals(args.arrivals),
        schedule_seed=args.schedule_seed,
        max_requests=args.max_requests,
        max_duration_s=args.max_duration,
        max_inflight=args.max_inflight,
        drain_timeout_s=args.drain_timeout,
        **_base_kwargs(args),
    )
    return _execute(config, args, load=True)


def _execute(config: Any, args: argparse.Namespace, *, load: bool) -> int:
    """Run with SIGINT/SIGTERM stopping cleanly; print the report; exit 0 ok, 1 failures, 2 usage, 130 interrupted."""
    import asyncio
    import json
    import signal
    import sys

    from shoal_batch.config import ConfigError
    from shoal_batch.inputs import MalformedInputError
    from shoal_batch.report import Report, format_report
    from shoal_batch.runner import run_batch_async, run_coroutine, run_open_loop_async

    async def main() -> Report:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            if load:
                return await run_open_loop_async(config, stop=stop)
            return await run_batch_async(config, stop=stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    name = "load" if load else "run"
    try:
        report = run_coroutine(main())
    except MalformedInputError as exc:
        print(f"shoal batch {name}: malformed input, {exc} (--fail-fast)", file=sys.stderr, flush=True)
        return 2
    except (ConfigError, FileNotFoundError, IsADirectoryError) as exc:
        print(f"shoal batch {name}: {exc}", file=sys.stderr, flush=True)
        return 2
    print(format_report(report), flush=True)
    if args.report_json:
        with open(args.report_json, "w", encoding="utf-8") as handle:
            json.dump(report.to_dict(), handle, indent=2)
            handle.write("\n")
    if report.interrupted:
        return 130
    return 1 if report.failed else 0
