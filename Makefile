# Shortcuts; scripts/ holds the real commands.
.PHONY: test demo bench bench-quick

test:
	scripts/test.sh -q

demo:
	scripts/demo.sh

bench:            ## every benchmark at full size; rewrites benchmarks/RESULTS.md (tens of minutes)
	scripts/setup.sh
	.venv/bin/python benchmarks/run_all.py $(BENCH_ARGS)  # e.g. BENCH_ARGS="--workdir ~/omnivec-bench"

bench-quick:      ## every benchmark at small sizes (a few minutes): checks the scripts, not the machine
	scripts/setup.sh
	.venv/bin/python benchmarks/run_all.py --quick --out benchmarks/RESULTS-quick.md
