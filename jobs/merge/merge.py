"""spark-submit entry point of the serving layer; `weir merge` runs the same code.

    spark-submit jobs/merge/merge.py --conf conf/emr.yaml
    spark-submit jobs/merge/merge.py --conf conf/emr.yaml --follow        # beside the stream
    spark-submit jobs/merge/merge.py --conf conf/emr.yaml --every 2m

Publishes the unified telemetry_minute table (BATCH up to the horizon, SPEED beyond) in one
Delta commit, or none when nothing changed; each run is recorded in _control/merge_runs.
``--follow`` merges every ``timing.merge_interval_seconds`` (``--every`` overrides it) until
SIGTERM / SIGINT, finishing the current merge first. Exit codes: 0 success, 1 a failed merge
(recorded), 2 bad configuration or arguments.
"""

import argparse
import sys

from weir.config import load_config
from weir.entry import conf_argument, run_job
from weir.serving import merge_interval, run_merges
from weir.spark import build_session


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description="Merge BATCH and SPEED into telemetry_minute.")
    conf_argument(parser)
    parser.add_argument("--follow", action="store_true", help="merge every merge interval")
    parser.add_argument("--every", metavar="DURATION", help="merge every DURATION (120, 5m)")
    args = parser.parse_args(argv)

    def merge() -> None:
        config = load_config(args.conf)
        interval = merge_interval(config, args.follow, args.every)
        run_merges(build_session(config, app_name="weir-merge"), config, interval)

    return run_job(merge)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
