import pytest

from medmodal.labeling import ReportLabeler, default_labeler


@pytest.fixture(scope="session")
def labeler() -> ReportLabeler:
    # Built once per test session (medspaCy import + rules: several seconds).
    return default_labeler()


@pytest.fixture(scope="session")
def probable_labeler() -> ReportLabeler:
    # High-likelihood hedges ("probable", "likely") as positive: the Open-i indexers' convention.
    return ReportLabeler(probable_as="positive")
