"""spark-submit entry point of table maintenance; `weir maintain` runs the same code.

    spark-submit jobs/maintenance/maintain.py --conf conf/emr.yaml [--retention-hours 168]

OPTIMIZE (Z-order by device_id for the minute views) and VACUUM every Weir table.
Exit codes: 0 success, 1 a failure at run time, 2 bad configuration or arguments.
"""

import argparse
import sys

from weir.config import load_config
from weir.entry import conf_argument, run_job
from weir.maintain import MIN_RETENTION_HOURS, check_retention, run_maintenance
from weir.spark import build_session


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description="OPTIMIZE and VACUUM every Weir table.")
    conf_argument(parser)
    parser.add_argument("--retention-hours", type=float, default=MIN_RETENTION_HOURS)
    args = parser.parse_args(argv)

    def maintain() -> None:
        config = load_config(args.conf)
        check_retention(args.retention_hours, False)
        run_maintenance(
            build_session(config, app_name="weir-maintain"), config, args.retention_hours
        )

    return run_job(maintain)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
