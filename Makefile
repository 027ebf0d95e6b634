# Two commands a newcomer needs: `make run` and `make test`. Both create .venv on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# OpenMP threads sleep instead of spinning while they wait: on a busy 2-core machine a
# spinning partner thread makes torch many times slower.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: run test bench models clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1 || $(BIN)/python -m pip install --quiet 'torch>=2.10,<2.15' 'torchvision>=0.25,<0.30'
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/streamlit run app.py

# pytest exits 5 when it collected no test: that is a failure, never a silent pass.
test: $(STAMP)
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_quant.py

models: $(STAMP)
	$(BIN)/python sample_models/train.py

clean:
	rm -rf $(VENV)
