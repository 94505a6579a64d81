def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test that takes more than a few seconds (runs in CI)")
