import pytest


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """80 synthetic studies at 32 px without masks (a grid's data)."""
    from medmodal.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("grid_data")
    generate_dataset(out, n=80, seed=0, image_size=32, masks=False)
    return out
