"""Shared test setup: never touch the network, keep torch small and deterministic."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # must precede any huggingface_hub import
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread per pytest-xdist worker (`-n 2` runs two workers on the 2 CI cores), two without xdist.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The read-only benchmark data beside the checkout; slow tests skip if it is absent."""
    if not SHARED.exists():
        pytest.skip("../shared/data is not present")
    return SHARED


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster, and steadier on a shared machine, on one thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_cnn_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init CIFAR ResNet-20 saved in timm's local-dir layout (32 px inputs keep it fast)."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet20", num_classes=10).eval()
    folder = tmp_path_factory.mktemp("teacher")
    save_for_hf(model, str(folder), safe_serialization=True)
    return folder
