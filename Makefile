# The course's commands. `make course` and `make test` are the two a newcomer needs (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Installed first, on its own: on the course machines this pin is a local CPU wheel, where any other
# torch spec downloads gigabytes of CUDA packages. Override it for another build, e.g. TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# The workshop kit: `make wheelhouse` fills it; when it holds wheels, installs use it alone (no index, no network).
WHEELHOUSE ?= wheelhouse
OFFLINE := $(if $(wildcard $(WHEELHOUSE)/*.whl),--no-index --find-links $(WHEELHOUSE))
# Notebooks run on the kernel of this venv, whatever kernels the machine has elsewhere.
export JUPYTER_PATH := $(abspath $(VENV))/share/jupyter
export PYTHONUNBUFFERED := 1

.PHONY: help check course test nbval fake-cuda lab site wheelhouse course-model saes transcoders toy-models evaluate notebooks refresh install clean

# MODEL=course-bpe (or gpt2, with internet) runs the lessons on another model; course by default.
course: $(STAMP)  ## run every lesson headless; executed copies and HTML go to build/
	$(if $(MODEL),MECHLIB_MODEL=$(MODEL) )$(BIN)/python -m mechlib.lessons

# Without MODEL: the unit tests, then nbval on the course model and each lesson headless on course-bpe on a fake GPU
# (mechlib/fake_cuda.py: the model "on cuda", CUDA's device rules enforced, on the CPU), two jobs at a
# time, one thread each (these small models gain little from a second thread; two jobs fill two cores). nbval goes
# first, then the lessons from the last to the first (03 and 04, the longest, in the middle); each job's output appears when it ends,
# and a failure does not stop the other jobs.
# MODEL=x: nbval on x only.
LESSONS := $(basename $(notdir $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))))
reverse = $(if $(1),$(call reverse,$(wordlist 2,$(words $(1)),$(1))) $(firstword $(1)))
help:  ## list these targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

check: $(STAMP)  ## the developers' fast loop: the unit tests not marked slow (no notebooks, browser or Colab venv)
	$(BIN)/python -m pytest -m "not slow" tests

test: $(STAMP)  ## unit tests, nbval over the lesson notebooks, and every lesson on the second model
	$(BIN)/python -m pytest tests
	$(MAKE) --no-print-directory $(if $(MODEL),nbval,-j2 --keep-going --output-sync=target JOB_THREADS=1 nbval \
		$(addprefix course-bpe-,$(call reverse,$(LESSONS))))

JOB_THREADS ?=
THREADS = $(if $(JOB_THREADS),OMP_NUM_THREADS=$(JOB_THREADS) )
nbval: $(STAMP)  ## every lesson under nbval (MODEL=x for another model than the course model)
	MECHLIB_MODEL=$(or $(MODEL),course) $(THREADS)$(BIN)/python -m pytest --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg notebooks/[0-9][0-9]_*.ipynb

course-bpe-%: $(STAMP)  # one lesson headless on course-bpe on a fake GPU, e.g. make course-bpe-08_circuit_tracing
	MECHLIB_MODEL=course-bpe MECHLIB_FAKE_CUDA=1 $(THREADS)$(BIN)/python -m mechlib.lessons --out build/course-bpe notebooks/$*.ipynb

# A GPU stops a lesson where a tensor made on the CPU meets one on the model's device; fake CUDA finds that on a CPU.
fake-cuda: $(STAMP)  ## run every lesson headless with the model on a fake GPU (MODEL=x for another model)
	$(if $(MODEL),MECHLIB_MODEL=$(MODEL) )MECHLIB_FAKE_CUDA=1 $(BIN)/python -m mechlib.lessons --out build/fake-cuda

# JupyterLab refuses to start as root unless told --allow-root: containers and many workshop images run as root.
LAB_DIR ?= notebooks/
lab: $(STAMP)  ## JupyterLab in the course environment (LAB_ARGS: more options for it)
	$(BIN)/jupyter lab $(LAB_DIR) $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

site: $(STAMP)  ## the course website, from the committed lessons, into build/site (offline; see mechlib/site.py)
	$(BIN)/python -m mechlib.site

# Every wheel `make install` needs, at the tested versions, for this machine's platform and Python (476 MB with CPU torch).
wheelhouse:  ## download the workshop kit: every wheel the course needs, into wheelhouse/
	$(PYTHON) -m pip download -q -d $(WHEELHOUSE) -c constraints.txt "$(TORCH_SPEC)" ".[dev]" "setuptools>=68" wheel
	@echo "$(WHEELHOUSE)/: $$(ls $(WHEELHOUSE) | wc -l) files, $$(du -sh $(WHEELHOUSE) | cut -f1); copy it with the repository"

# MODEL=course or MODEL=course-bpe retrains one of them; both by default (under 30 min each on 2 CPU cores).
course-model: $(STAMP)  ## retrain the course models from scratch, then print their targets
	$(BIN)/python -m mechlib.course_model train $(if $(MODEL),--model $(MODEL))

# The SAEs shipped in data/saes/ for lessons 03 and 06: 8x, on normalised activations, 300-500 steps of 4096 tokens:
# the course's target SAE (FVU <= 0.10, CE recovered vs mean >= 0.90, dead <= 5%; 500 steps: at 300 the retrained
# course model's reached FVU 0.110), and for course-bpe mechlib.sae.for_model.RECIPE's 300 steps (what lesson 06 on
# that model would otherwise train on first use). Then, per course model, lesson 03's comparison
# (mechlib.sae.compare: five architectures tuned to L0 = 16 at 8x on the same tokens, three seeds each, the three
# remedy SAEs of section 4, and an SAE on the MLP's output), about 15 minutes each.
SAE_TRAIN = $(BIN)/python -m mechlib.sae train --normalize
saes: $(STAMP)  ## retrain the SAEs shipped in data/saes/ (30 min on one thread of 2 CPU cores), printing their metrics
	$(SAE_TRAIN) --steps 500 --lr 3e-3 --hook blocks.2.hook_resid_post --architecture topk --k 16 --dead-after 50 --out data/saes/L2-topk-8x
	$(SAE_TRAIN) --steps 500 --hook blocks.0.hook_resid_post --architecture topk --k 16 --dead-after 50 --out data/saes/L0-topk-8x
	$(SAE_TRAIN) --model course-bpe --steps 300 --lr 3e-3 --hook blocks.2.hook_resid_post --architecture topk --k 16 --dead-after 50 --out data/saes/course-bpe/L2-topk-8x
	$(BIN)/python -m mechlib.sae compare --model course --out data/saes/compare
	$(BIN)/python -m mechlib.sae compare --model course-bpe --out data/saes/course-bpe/compare

# Lesson 08's transcoders, one per layer of each course model (mechlib.transcoders.RECIPE), with their metrics.
transcoders: $(STAMP)  ## retrain the transcoders shipped in data/transcoders/ (MODEL=course or course-bpe; both by default)
	$(foreach m,$(or $(MODEL),course course-bpe),$(BIN)/python -m mechlib.transcoders --model $(m) &&) true

# Lesson 02's phase diagram and geometry sweeps (mechlib.toy_sweeps), which the lesson loads: about 80 s.
toy-models: $(STAMP)  ## retrain the toy-model sweeps shipped in data/toy_models/
	$(BIN)/python -m mechlib.toy_sweeps

notebooks: $(STAMP)  ## regenerate setup cells and exercise notebooks from the lesson sources
	$(BIN)/python -m mechlib.build_notebooks

refresh: $(STAMP)  ## re-execute the lessons, save their outputs, regenerate the exercise notebooks
	$(BIN)/python -m mechlib.lessons --in-place
	$(BIN)/python -m mechlib.build_notebooks

evaluate: $(STAMP)  ## print both course models' targets, trained and held-out side by side
	$(BIN)/python -m mechlib.course_model evaluate $(if $(MODEL),--model $(MODEL))

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(OFFLINE) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q $(OFFLINE) -c constraints.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (course)" >/dev/null
	touch $@

clean:
	rm -rf build
