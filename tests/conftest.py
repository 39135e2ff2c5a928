import pytest

from mechlib import load_model


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
    return load_model("course-bpe", device="cpu")


@pytest.fixture(scope="session")
def course_bpe_hf():
    return load_model("course-bpe", backend="transformers", device="cpu")


@pytest.fixture(scope="session")
def course_bpe_nnsight():
    return load_model("course-bpe", backend="nnsight", device="cpu")
