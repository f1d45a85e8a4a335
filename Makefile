# Everyday commands (from a source checkout; `pip install -e ".[dev]"` first).
PY ?= python

.PHONY: test test-slow test-gpu test-compat lint check gpu-plan bench-cpu bench-gpu mnist-table

test:            ## the fast suite (what CI runs); Triton kernels run in the interpreter without a GPU
	$(PY) -m pytest -q

test-slow:       ## everything, slow tests included
	$(PY) -m pytest -q -m "slow or not slow"

test-gpu:        ## on a CUDA machine: the kernel tests including the GPU-only ones
	$(PY) -m pytest -q -m "slow or not slow" tests/test_kernels.py

# The GPU machine's versions (torch 2.11, triton 3.6, Python 3.12), on this CPU, under the Triton
# interpreter. numpy < 2.3: triton 3.6's interpreter failed with numpy 2.4 here.
PY312 ?= python3.12
test-compat:     ## the fast suite on the GPU machine's torch/triton/Python (a venv in .venv-compat)
	test -x .venv-compat/bin/python || $(PY312) -m venv .venv-compat
	.venv-compat/bin/pip install -q torch==2.11.0 torchvision==0.26.0 "numpy<2.3" pytest pytest-benchmark \
	  pytest-xdist tqdm matplotlib sympy scipy einops
	.venv-compat/bin/pip install -q --no-deps -e .
	.venv-compat/bin/python -m pytest -q -n 2

check:           ## efficient-kan check: the kernels against the PyTorch path here (interpreter without a GPU)
	$(PY) -m efficient_kan check

gpu-plan:        ## on the GPU machine: the one-run plan (check, target shapes, training step, one MNIST row); publishes
	bash tools/gpu_session.sh --publish plan

lint:
	ruff check . && ruff format --check efficient_kan kernels tests benchmarks tools examples train_mnist.py

# Benchmarks never write into benchmarks/results/ (the committed results) unless told to with
# --publish (or --out benchmarks/results); by default each run writes a new git-ignored
# bench-out/<script>-<UTC time>/ folder and prints it.
bench-cpu:       ## PyTorch path on CPU vs the floor, a dense Cox-de Boor layer and inkan (if installed); writes bench-out/
	$(PY) benchmarks/bench_cpu_layer.py

# Publishes: the results of a GPU are what this target is for, and they are merged by key with the
# committed ones of the same GPU.
bench-gpu:       ## the layer benchmark (needs CUDA); publishes: --publish writes benchmarks/results/bench_layer_<gpu>.*
	$(PY) benchmarks/bench_layer.py --publish

# Does not publish: it runs on any machine with its default threads, while the committed CPU
# tables come from the exact commands recorded in them; to publish, run that command with --publish.
mnist-table:     ## KAN vs MLP on the bundled MNIST subset; a trial: writes a new bench-out/mnist_table-<time>/
	$(PY) benchmarks/mnist_table.py --dataset mnist-5k
