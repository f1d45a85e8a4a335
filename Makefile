# Everyday commands (from a source checkout; `pip install -e ".[dev]"` first).
PY ?= python
export PYTHONPATH := .

.PHONY: test test-slow test-gpu lint bench-cpu bench-gpu mnist-table

test:            ## the fast suite (what CI runs); Triton kernels run in the interpreter without a GPU
	$(PY) -m pytest -q

test-slow:       ## everything, slow tests included
	$(PY) -m pytest -q -m "slow or not slow"

test-gpu:        ## on a CUDA machine: the kernel tests including the GPU-only ones
	$(PY) -m pytest -q -m "slow or not slow" tests/test_kernels.py

lint:
	ruff check . && ruff format --check efficient_kan kernels tests benchmarks examples train_mnist.py

bench-cpu:       ## PyTorch path vs a dense Cox-de Boor layer on CPU
	OMP_NUM_THREADS=1 $(PY) -m pytest benchmarks/bench_cpu_layer.py --benchmark-enable

bench-gpu:       ## the layer benchmark (needs CUDA); writes benchmarks/results/bench_layer_<gpu>.*
	$(PY) benchmarks/bench_layer.py

mnist-table:     ## KAN vs MLP on the bundled MNIST subset
	$(PY) benchmarks/mnist_table.py --dataset mnist-5k
