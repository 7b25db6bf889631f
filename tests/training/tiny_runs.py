"""What the training tests share: a tiny RAMiT recipe, and one thread for it."""

import pytest
import torch

from ramit_hf.training.recipes import load_recipe

TINY = {"model.embed_dim": 16, "model.depths": [1, 1, 1, 2], "model.fusion_expand_groups": 1}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread, and spinning intra-op threads slow to a crawl on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_recipe(task="sr-x2", **fields):
    """A recipe of the tiny model: 24 px patches, batch 4, 4 epochs of 4 repeats, constant learning rate."""
    settings = dict(
        TINY,
        patch_sizes=[24],
        batch_sizes=[4],
        dataset_repeat=4,
        epochs=4,
        warmup_epochs=0,
        milestones=[],
        learning_rate=2e-3,
        dataloader_num_workers=0,
        logging_steps=1000,
    )
    settings.update(fields)
    return load_recipe(task, settings)
