"""spark-submit entry point of the data-quality checks; `weir dq run` runs the same code.

    spark-submit jobs/quality/run_checks.py --conf conf/emr.yaml [--suite raw ...] [--every 15m]

Appends one row per expectation to dq/results and publishes the Data Docs to dq/docs/.
Exit codes: 0 every critical check passed, 3 a critical check failed, 1 a failure to run,
2 bad configuration or arguments.
"""

import argparse
import sys

from weir.config import load_config
from weir.entry import conf_argument, interval_seconds, run_job
from weir.quality.run import chosen_suites, run_dq
from weir.spark import build_session


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description="Run the data-quality checks.")
    conf_argument(parser)
    parser.add_argument("--suite", action="append", help="run only this suite (repeatable)")
    parser.add_argument("--every", metavar="DURATION", help="run every DURATION (90s, 5m)")
    args = parser.parse_args(argv)

    def check() -> None:
        config = load_config(args.conf)
        suites = chosen_suites(args.suite)
        interval = None if args.every is None else interval_seconds(args.every, "--every")
        run_dq(build_session(config, app_name="weir-dq"), config, suites, interval)

    return run_job(check)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
