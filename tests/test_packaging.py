"""Python and JVM sides pinned to one Spark/Delta line (EMR 7.x), and the `weir` script."""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ElementTree
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from weir.config import config_from_mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - EMR's Python 3.9
    tomllib = pytest.importorskip("tomli")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POM_NAMESPACE = "{http://maven.apache.org/POM/4.0.0}"
# artifact-1.2.3.jar -> artifact (a version starts with digits and a dot; "kafka-0-10" is a name)
_JAR_VERSION = re.compile(r"-\d+(\.\d+)+[\w.-]*\.jar$")


@pytest.fixture(scope="module")
def pom() -> dict[str, str]:
    """The <properties> of jvm/spark-runtime.pom.xml."""
    tree = ElementTree.parse(PROJECT_ROOT / "jvm" / "spark-runtime.pom.xml")
    properties = tree.getroot().find(f"{POM_NAMESPACE}properties")
    assert properties is not None
    return {child.tag.removeprefix(POM_NAMESPACE): child.text or "" for child in properties}


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    """Exact `name==version` pins of pyproject.toml's dependencies."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    found = (re.fullmatch(r"([A-Za-z0-9_.-]+)==([^,;\s]+)", dep) for dep in project["dependencies"])
    return {match.group(1).lower(): match.group(2) for match in found if match}


@pytest.fixture(scope="module")
def jars_dir() -> Path:
    """spark.jars_dir of conf/local.yaml, resolved against the project root as `make` does."""
    document = yaml.safe_load((PROJECT_ROOT / "conf" / "local.yaml").read_text("utf-8"))
    relative = document["spark"]["jars_dir"]
    assert not Path(relative).is_absolute()
    folder = PROJECT_ROOT / relative
    if not (folder / ".resolved").exists():
        pytest.fail(f"{folder} is not filled; run `make setup`")
    return folder


def jar_names(folder: Path) -> set[str]:
    return {path.name for path in folder.glob("*.jar")}


def artifacts(folder: Path) -> set[str]:
    return {_JAR_VERSION.sub("", name) for name in jar_names(folder)}


def pyspark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def test_pyspark_pin_equals_the_pom_spark_version(pins: dict[str, str], pom: dict) -> None:
    assert pins["pyspark"] == pom["spark.version"]


def test_delta_spark_pin_equals_the_pom_delta_version(pins: dict[str, str], pom: dict) -> None:
    assert pins["delta-spark"] == pom["delta.version"]


def test_installed_packages_are_the_pinned_ones(pom: dict[str, str]) -> None:
    import pyspark

    assert metadata.version("pyspark") == pom["spark.version"]
    assert pyspark.__version__ == pom["spark.version"]
    assert metadata.version("delta-spark") == pom["delta.version"]


def test_runtime_line_is_emr_7(pom: dict[str, str]) -> None:
    """EMR 7.x: Spark 3.5, Scala 2.12, Delta 3.x."""
    assert pom["spark.version"].startswith("3.5.")
    assert pom["scala.binary.version"] == "2.12"
    assert pom["delta.version"].startswith("3.")


def test_jars_dir_holds_delta_and_kafka_for_this_spark(jars_dir: Path, pom: dict) -> None:
    scala, spark, delta = pom["scala.binary.version"], pom["spark.version"], pom["delta.version"]
    names = jar_names(jars_dir)
    assert f"delta-spark_{scala}-{delta}.jar" in names
    assert f"delta-storage-{delta}.jar" in names
    assert f"spark-sql-kafka-0-10_{scala}-{spark}.jar" in names
    assert f"hadoop-aws-{pom['hadoop.version']}.jar" in names


def test_jars_dir_has_one_version_of_each_artifact(jars_dir: Path) -> None:
    assert len(artifacts(jars_dir)) == len(jar_names(jars_dir))


def test_jvm_side_matches_what_the_pyspark_wheel_ships(pom: dict[str, str]) -> None:
    """hadoop-aws must match pyspark's Hadoop; the Scala line must match its scala-library."""
    shipped = jar_names(pyspark_jars())
    assert f"hadoop-client-api-{pom['hadoop.version']}.jar" in shipped
    assert f"spark-core_{pom['scala.binary.version']}-{pom['spark.version']}.jar" in shipped
    assert any(name.startswith(f"scala-library-{pom['scala.binary.version']}.") for name in shipped)


def test_jars_dir_repeats_nothing_the_wheel_ships(jars_dir: Path) -> None:
    """A second copy of a class on the classpath (another Hadoop, Scala, lz4…) invites conflicts."""
    assert artifacts(jars_dir) & artifacts(pyspark_jars()) == set()


def test_local_config_points_spark_at_the_jars_dir(
    jars_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    document = yaml.safe_load((PROJECT_ROOT / "conf" / "local.yaml").read_text("utf-8"))
    assert Path(config_from_mapping(document, environ={}).spark.jars_dir) == jars_dir


def test_weir_console_script_resolves_to_the_cli() -> None:
    from weir.cli import run

    (entry,) = metadata.entry_points(group="console_scripts", name="weir")
    assert entry.value == "weir.cli:run"
    assert entry.load() is run
    assert (Path(sys.executable).parent / "weir").is_file()
