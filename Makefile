# The course's commands. `make course` and `make test` are the two a newcomer needs (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Installed first, on its own: on the course machines this pin is a local CPU wheel, where any other
# torch spec downloads gigabytes of CUDA packages. Override it for another build, e.g. TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# Notebooks run on the kernel of this venv, whatever kernels the machine has elsewhere.
export JUPYTER_PATH := $(abspath $(VENV))/share/jupyter
export PYTHONUNBUFFERED := 1

.PHONY: course test lab course-model saes transcoders toy-models evaluate notebooks refresh install clean

# MODEL=course-bpe (or gpt2, with internet) runs the lessons on another model; course by default.
course: $(STAMP)  ## run every lesson headless; executed copies and HTML go to build/
	$(if $(MODEL),MECHLIB_MODEL=$(MODEL) )$(BIN)/python -m mechlib.lessons

# Without MODEL: nbval on the course model, then every lesson headless on course-bpe. MODEL=x: nbval on x only.
test: $(STAMP)  ## unit tests, nbval over the lesson notebooks, and every lesson on the second model
	$(BIN)/python -m pytest tests
	MECHLIB_MODEL=$(or $(MODEL),course) $(BIN)/python -m pytest --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg notebooks/[0-9][0-9]_*.ipynb
	$(if $(MODEL),,MECHLIB_MODEL=course-bpe $(BIN)/python -m mechlib.lessons --out build/course-bpe)

lab: $(STAMP)  ## JupyterLab in the course environment
	$(BIN)/jupyter lab notebooks/

# MODEL=course or MODEL=course-bpe retrains one of them; both by default (under 30 min each on 2 CPU cores).
course-model: $(STAMP)  ## retrain the course models from scratch, then print their targets
	$(BIN)/python -m mechlib.course_model train $(if $(MODEL),--model $(MODEL))

# The SAEs shipped in data/saes/ for lessons 03 and 06: 8x, on normalised activations, 300-500 steps of 4096 tokens:
# the course's target SAE (FVU <= 0.10, CE recovered vs mean >= 0.90, dead <= 5%), and the same recipe for course-bpe
# (what lesson 06 on that model would otherwise train on first use). Then, per course model, lesson 03's comparison
# (mechlib.sae.compare: five architectures tuned to L0 = 16 at 8x on the same tokens, three seeds each, the three
# remedy SAEs of section 4, and an SAE on the MLP's output), about 15 minutes each.
SAE_TRAIN = $(BIN)/python -m mechlib.sae train --normalize
saes: $(STAMP)  ## retrain the SAEs shipped in data/saes/ (about 45 min on 2 CPU cores), printing their metrics
	$(SAE_TRAIN) --steps 300 --lr 3e-3 --hook blocks.2.hook_resid_post --architecture topk --k 16 --dead-after 50 --out data/saes/L2-topk-8x
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
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (course)" >/dev/null
	touch $@

clean:
	rm -rf build
