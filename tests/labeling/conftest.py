import pytest

from medmodal.labeling import ReportLabeler, default_labeler


@pytest.fixture(scope="session")
def labeler() -> ReportLabeler:
    # Built once per test session (medspaCy import + rules: several seconds).
    return default_labeler()
