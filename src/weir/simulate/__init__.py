"""`weir simulate`: a realistic IoT fleet, a fault mix, and a ground-truth ledger of every run.

fleet.py   devices and their physics (numpy state, one tick at a time)
faults.py  fault kinds, rates and presets, and how each faulty record is built
stream.py  the deterministic record stream: readings + faults + duplicate copies
ledger.py  what each sink acknowledged and the fate weir.contract must give it
sinks.py   Kafka, Kinesis and landing-folder (Firehose-style) writers
run.py     one run: pacing, progress, Ctrl-C, the ledger beside it
"""
