import pytest



@pytest.fixture
def tiny(tmp_path):
    """Overrides for a small, quick run writing under tmp_path."""
    return {
        "num-partitions": 4,
        "num-server-rounds": 2,
        "local-epochs": 1,
        "fraction-train": 0.5,
        "results-dir": str(tmp_path / "results"),
    }
