"""Root conftest: plain `pytest` runs every benchmark body once, untimed; `--benchmark-only` times them."""


def pytest_configure(config):
    opt = config.option
    if hasattr(opt, "benchmark_disable") and not (opt.benchmark_only or opt.benchmark_enable):
        opt.benchmark_disable = True
