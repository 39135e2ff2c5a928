import pytest

from mechlib import load_model
from mechlib.loading import is_shipped


def require_shipped(name: str) -> None:
    """Skip, saying so, while a course model is not in data/ yet (course-bpe: issue 13, trained next)."""
    if not is_shipped(name):
        pytest.skip(f"{name} is not trained yet: make course-model MODEL={name} (issue 13)")


@pytest.fixture(scope="session")
def course_tl():
    return load_model("course", device="cpu")


@pytest.fixture(scope="session")
def course_tl_folded():
    """The course model with LayerNorm folded (compatibility mode), as lesson 01 uses it."""
    return load_model("course", device="cpu", compatibility_mode=True)


@pytest.fixture(scope="session")
def course_hf():
    return load_model("course", backend="transformers", device="cpu")


@pytest.fixture(scope="session")
def course_nnsight():
    return load_model("course", backend="nnsight", device="cpu")


@pytest.fixture(scope="session")
def course_bpe_tl():
    require_shipped("course-bpe")
    return load_model("course-bpe", device="cpu")


@pytest.fixture(scope="session")
def course_bpe_hf():
    require_shipped("course-bpe")
    return load_model("course-bpe", backend="transformers", device="cpu")


@pytest.fixture(scope="session")
def course_bpe_nnsight():
    require_shipped("course-bpe")
    return load_model("course-bpe", backend="nnsight", device="cpu")
