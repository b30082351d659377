# Conveniences over ./run (which sets up the environment itself).
.PHONY: demo test bench lint
demo:
	./run demo
test:
	./run test
bench:
	./run bench --quick
lint:
	./run python -m ruff check flexcore tests bench examples
