"""spark-submit entry point of the raw archiver and speed layer; `weir stream` runs the same code.

    spark-submit jobs/streaming/stream.py --conf conf/emr.yaml --source kafka [--available-now]
        [--reset-checkpoint]

Exit codes: 0 success (also after SIGTERM / SIGINT: the queries stop after their current
micro-batch), 1 a failed query or a refused checkpoint, 2 bad arguments or configuration
(nothing written).
"""

import argparse
import sys

from weir.config import load_config
from weir.entry import conf_argument, run_job, run_until_stopped
from weir.layers.streaming import run_stream
from weir.sources import SOURCE_NAMES, check_source
from weir.spark import build_session


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description="Raw archiver and speed layer of one source.")
    conf_argument(parser)
    parser.add_argument("--source", choices=SOURCE_NAMES, default="kafka")
    parser.add_argument("--available-now", action="store_true", help="drain, then stop")
    parser.add_argument("--reset-checkpoint", action="store_true", help="start a new epoch")
    args = parser.parse_args(argv)

    def stream() -> None:
        config = load_config(args.conf)
        check_source(config, args.source)
        spark = build_session(config, app_name=f"weir-stream-{args.source}")
        run_until_stopped(
            lambda stop: run_stream(
                spark, config, args.source, args.available_now, args.reset_checkpoint, stop
            ),
            "the current micro-batch",
        )

    return run_job(stream)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
