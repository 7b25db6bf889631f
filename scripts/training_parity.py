"""RamitTrainer against the original RAMiT training code: the same steps, and the same data in distribution.

    python scripts/training_parity.py --original-code /path/to/RAMiT [--traces tests/training/data/original_traces.json]

**Steps.** For each case (a built-in recipe and the original README's training command for it, both scaled down
alike: epochs / 5, patches / 2 or / 4, batches / 8, a RAMiT-1 shrunk to 16 channels and depths 1-1-1-2), the script

1. prepares our run exactly as `ramit train` does (`prepare_training`: data, schedule, model, Adam and the
   learning-rate schedule), on four McMaster images, and takes every micro-batch its dataset will serve;
2. runs the original's own training code on those batches: `ddp_main.get_args_parser` for the arguments,
   `ddp_builder.build_model_optimizer_scaler`, `build_loss_func`, `rebuild_progressive`, `rebuild_after_warm_start`
   and `ddp_engine_train.train_one_epoch`, in the epoch loop of `ddp_main.main` (mirrored here: `main` needs a GPU
   index); its model starts from our initial weights;
3. trains ours with `RamitTrainer.train()` (the default computation, which is "fused" for training), and again
   with the "faithful" computation (the original's operations), recording the loss and learning rate of every
   step.

The differences of the fused run from the original are set against those of the fused run from the faithful one:
the same network computed with reassociated float32 sums, which is all that separates them, so its drift over the
same steps is the noise floor.

**Data.** The original's `dataset.py` classes and ours draw a few thousand patches each from the same images:
patch positions and orientations (decoded from an image whose pixels are their own coordinates), noise levels
(measured from the residual), the low-resolution inputs made on the fly against MATLAB's files (Set5), and the
steps per epoch of the paper's data sizes.

What the original imports from torchvision, timm, OpenCV and its own `utils` package (not in every checkout, and
torchvision does not import beside this project's torch) is replaced by stand-ins (`original_ramit.py` and
`ORIGINAL_TRAINING` below); where the checkout has `utils/train_utils.py`, that file is used instead. Module globals
of the original that the script replaces: `DDP` (one process), `build_dataset` (our batches) and, to record them,
the loss function and `half_learning_rate`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from ramit_hf.convert import convert_key, save_model_folder
from ramit_hf.modeling_ramit import RamitForImageRestoration
from ramit_hf.training import prepare_training
from ramit_hf.training.models import build_model
from ramit_hf.training.recipes import Recipe, load_recipe

SHARED = Path(os.environ.get("RAMIT_SHARED", REPO.parent / "shared")).resolve()
TRACES = REPO / "tests" / "training" / "data" / "original_traces.json"
TRAIN_IMAGES = ("1.png", "2.png", "3.png", "4.png")  # of McMaster/HR
EPOCH_DIVISOR = 5  # every epoch count of both sides (they all divide by 5)
BATCH_DIVISOR = 8
TINY_MODEL = {"embed_dim": 16, "depths": [1, 1, 1, 2]}  # and the original's spec: dim, depths
TRACE_STEPS = 3  # losses of the first steps kept for the test


# --------------------------------------------------------------------------------------------------
# the cases


@dataclass(frozen=True)
class Case:
    """A built-in recipe and the original README's command for it (run with `--model_name RAMiT-1`)."""

    name: str
    recipe: str
    command: str
    patch_divisor: int
    first_steps_per_epoch: int
    loss: str = "l1"

    def recipe_fields(self, init_from: str | None = None) -> dict:
        """Our recipe's overrides: its own epochs, patches and batches scaled down, the tiny model."""
        base = load_recipe(self.recipe)
        e = EPOCH_DIVISOR
        fields = {
            "variant": "RAMiT-1",
            "model": dict(TINY_MODEL),
            "epochs": _divide(base.epochs, e),
            "warmup_epochs": _divide(base.warmup_epochs, e),
            "warm_start_epochs": _divide(base.warm_start_epochs, e),
            "milestones": [_divide(m, e) for m in base.milestones],
            "phase_epochs": [_divide(p, e) for p in base.phase_epochs],
            "patch_sizes": [_divide(p, self.patch_divisor) for p in base.patch_sizes],
            "batch_sizes": [_divide(b, BATCH_DIVISOR) for b in base.batch_sizes],
            "loss": self.loss,
            "dataloader_num_workers": 0,
            "image_cache_mb": 64,
            "logging_steps": 10**6,
        }
        fields["dataset_repeat"] = self.first_steps_per_epoch * fields["batch_sizes"][0] / len(TRAIN_IMAGES)
        fields["eval_every_epochs"] = fields["epochs"]
        if init_from is not None:
            fields["init_from"] = init_from
        return fields

    def original_argv(self, pretrain_path: str | None = None) -> list[str]:
        """The README command's arguments, scaled down as the recipe is."""
        argv = self.command.split()
        scaled = {
            "--total_epochs": EPOCH_DIVISOR,
            "--warmup_epoch": EPOCH_DIVISOR,
            "--warm_start_epoch": EPOCH_DIVISOR,
            "--half_list": EPOCH_DIVISOR,
            "--progressive_epoch": EPOCH_DIVISOR,
            "--training_patch_size": self.patch_divisor,
            "--batch_size": BATCH_DIVISOR,
        }
        for i, token in enumerate(argv[:-1]):
            if token in scaled:
                argv[i + 1] = ",".join(str(_divide(int(v), scaled[token])) for v in argv[i + 1].split(","))
        if "--warmup_epoch" not in argv:  # the parser's default, 20
            argv += ["--warmup_epoch", str(_divide(20, EPOCH_DIVISOR))]
        if self.loss == "charbonnier":
            argv += ["--criterion", "Charbonnier"]
        if pretrain_path is not None:
            argv = [pretrain_path if token == "PRETRAIN" else token for token in argv]
        return ["--ip_address", "127.0.0.1", "--gpus_per_node", "1", *argv]


def _divide(value, divisor: int) -> int:
    quotient = value / divisor
    if quotient != int(quotient):
        raise ValueError(f"{value} does not divide by {divisor}")
    return int(quotient)


_SR = (
    "--task lightweight_sr --training_patch_size 64 --batch_size 32 --progressive_epoch 0 --data_name DIV2K --img_norm"
)
_SR_X2 = f"--model_name RAMiT-1 --target_mode light_x2 {_SR} --total_epochs 500 --half_list 200,300,400,425,450,475"
_WARM = "--finetune --pretrain_path PRETRAIN --warm_start --warm_start_epoch 50 --model_name RAMiT-1"
_WARM_TAIL = "--total_epochs 300 --warmup_epoch 10 --half_list 50,100,150,175,200,225"
CASES = {
    case.name: case
    for case in (
        Case("sr-x2 L1", "sr-x2", _SR_X2, 2, 2),
        Case("sr-x2 Charbonnier", "sr-x2", _SR_X2, 2, 2, loss="charbonnier"),
        Case("sr-x3 warm start", "sr-x3", f"{_WARM} --target_mode light_x3 {_SR} {_WARM_TAIL}", 2, 2),
        Case("sr-x4 warm start", "sr-x4", f"{_WARM} --target_mode light_x4 {_SR} {_WARM_TAIL}", 2, 2),
        Case(
            "color-dn progressive",
            "color-dn",
            "--model_name RAMiT-1 --target_mode light_dn --task lightweight_dn --sigma 0,50 --training_patch_size "
            "64,96,128 --batch_size 32,16,8 --progressive_epoch 0,100,200 --data_name DFBW --total_epochs 400 "
            "--half_list 200,300,350,375 --img_norm",
            4,
            1,
        ),
    )
}


# --------------------------------------------------------------------------------------------------
# our side: the real run


@dataclass
class Trace:
    """What a run did: the loss and learning rate of every step, and its final weights (our parameter names)."""

    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)


def training_images(folder: Path) -> Path:
    """A folder with the four McMaster training images (copied, so that it holds nothing else)."""
    source = SHARED / "testsets" / "McMaster" / "HR"
    folder.mkdir(parents=True, exist_ok=True)
    for name in TRAIN_IMAGES:
        if not (source / name).is_file():
            raise FileNotFoundError(f"{source / name} is missing (the shared test sets, or set RAMIT_SHARED)")
        shutil.copyfile(source / name, folder / name)
    return folder


def warm_start_model(folder: Path) -> Path:
    """The x2 model a warm start begins from: the tiny x2 network initialised from the recipe's seed."""
    x2 = CASES["sr-x2 L1"]
    model, _ = build_model(load_recipe(x2.recipe, x2.recipe_fields()))
    return save_model_folder(model, folder, overwrite=True)


def our_recipe(case: Case, work: Path, computation: str | None = None, max_steps: int | None = None) -> Recipe:
    init_from = str(warm_start_model(work / "x2-init")) if load_recipe(case.recipe).warm_start_epochs else None
    fields = case.recipe_fields(init_from)
    if computation is not None:
        fields["computation"] = computation
    if max_steps is not None:
        fields["max_steps"] = max_steps
    return load_recipe(case.recipe, fields)


def prepare_ours(case: Case, work: Path, computation: str | None = None, max_steps: int | None = None):
    """Our run of a case, prepared as `ramit train` prepares it (nothing trained yet)."""
    recipe = our_recipe(case, work, computation, max_steps)
    images = training_images(work / "images")
    with contextlib.redirect_stderr(io.StringIO()):
        return prepare_training(
            recipe, images, None, work / "run", overwrite=True, disable_tqdm=True, save_strategy="no"
        )


def train_ours(run, expected_batches: list[dict] | None = None) -> Trace:
    """Train a prepared run with its trainer, recording each step's loss and learning rate (the rate the optimizer
    holds when the step computes its loss). With `expected_batches`, every batch is checked to be that step's."""
    trainer, trace = run.trainer, Trace()
    compute_loss = trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        step = len(trace.losses)
        if expected_batches is not None and not torch.equal(
            inputs["pixel_values"], expected_batches[step]["pixel_values"]
        ):
            raise AssertionError(f"step {step}: the trainer's batch is not the one the original was fed")
        loss = compute_loss(model, inputs, *args, **kwargs)
        trace.losses.append(float(loss.detach()))
        trace.lrs.append(float(trainer.optimizer.param_groups[0]["lr"]))
        return loss

    trainer.compute_loss = recording
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    trace.weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return trace


def scheduled_learning_rates(run) -> list[float]:
    """The learning rate of every step of a prepared run, from the optimizer and scheduler its trainer creates."""
    trainer = run.trainer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping the scheduler without optimizer steps
        trainer.create_optimizer_and_scheduler(num_training_steps=run.schedule.total_steps)
        rates = []
        for _ in range(run.schedule.total_steps):
            rates.append(float(trainer.optimizer.param_groups[0]["lr"]))
            trainer.lr_scheduler.step()
    trainer.optimizer = trainer.lr_scheduler = None
    return rates


# --------------------------------------------------------------------------------------------------
# the original's side


def _str2tuple(text: str) -> tuple[int, ...]:
    # utils/argfunc_utils.str2tuple: "200,300," -> (200, 300)
    return tuple(int(v) for v in text.replace("(", "").replace(")", "").split(",") if v != "")


def _half_learning_rate(optimizer, epoch, args, warm_start=False):
    # utils/train_utils.half_learning_rate, which the engine calls before every step: while the head warm-starts the
    # optimizer keeps the rate it was built with; then warm-up from 0 and halvings, the epoch counted from lr_cycle
    if args.lr_cycle is None:
        args.lr_cycle = args.total_epochs
    if args.finetune and args.warm_start and (epoch + 1) < args.warm_start_epoch + 1:
        return args.init_lr
    epoch = epoch if epoch < args.lr_cycle else epoch - args.lr_cycle
    if epoch < args.warmup_epoch:
        rate = args.init_lr * epoch / args.warmup_epoch
    else:
        rate = args.init_lr * (0.5 ** (np.array(args.half_list) < epoch).sum())
    for group in optimizer.param_groups:
        group["lr"] = rate * group["lr_scale"] if "lr_scale" in group else rate
    return rate


def _param_groups_lrd(model, weight_decay=0.05, no_weight_decay_list=(), layer_decay=0.75, model_name=""):
    # utils/train_utils.param_groups_lrd for the settings RAMiT trains with (no weight decay, no layer decay): one
    # group of every parameter
    if weight_decay != 0.0 or layer_decay != 1.0:
        raise NotImplementedError("the stand-in covers weight_decay 0 and layer_decay 1 (RAMiT's settings)")
    names, params = zip(*model.named_parameters(), strict=True)
    return [{"lr_scale": 1.0, "weight_decay": 0.0, "params": list(params), "param_names": list(names)}]


class _CharbonnierLoss(nn.Module):
    # utils/train_utils.CharbonnierLoss: mean of sqrt(d^2 + eps^2), eps 1e-3
    def __init__(self, eps=1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, x, y):
        difference = x - y
        return torch.mean(torch.sqrt(difference * difference + self.eps * self.eps))


def _not_needed(*args, **kwargs):
    raise NotImplementedError("not part of the training settings compared here")


def _crop(image, top, left, height, width):
    # torchvision's crop, for the original's dataset.py (which crops inside the image only)
    return image[..., top : top + height, left : left + width]


def _rotate(image, angle):
    # torchvision's rotate for right angles: counter-clockwise, as torch.rot90
    if angle % 90:
        raise NotImplementedError("right angles only")
    return torch.rot90(image, int(angle) // 90 % 4, dims=(-2, -1))


ORIGINAL_TRAINING = {
    "cv2": {},
    "torchvision.transforms.functional": {"crop": _crop, "hflip": lambda image: image.flip(-1), "rotate": _rotate},
    "timm.models.layers": {"_assert": lambda condition, message: None if condition else _raise(message)},
    "utils.argfunc_utils": {"str2tuple": _str2tuple},
    "utils.acc_utils": {},
    "utils.train_utils": {
        "half_learning_rate": _half_learning_rate,
        "param_groups_lrd": _param_groups_lrd,
        "CharbonnierLoss": _CharbonnierLoss,
        "cosine_learning_rate": _not_needed,
        "NativeScalerWithGradNormCount": _not_needed,
        "keep_num_files": lambda *args: None,
    },
}


def _raise(message):
    raise AssertionError(message)


class OriginalCode:
    """The original training modules imported from a checkout."""

    def __init__(self, folder: str | Path):
        from original_ramit import import_original

        self.folder = Path(folder).resolve()
        names = ["ddp_main", "ddp_builder", "ddp_engine_train", "dataset", "my_model.ramit"]
        self.main, self.builder, self.engine, self.dataset, self.ramit = import_original(
            self.folder, names, ORIGINAL_TRAINING
        )
        self.builder.DDP = _OneProcess

    def args(self, argv: list[str]):
        """The original's arguments for `argv`, completed as `ddp_main`'s `__main__` completes them."""
        args = self.main.get_args_parser().parse_args(argv)
        args.scale = int(args.target_mode[-1]) if args.target_mode[-1].isdigit() else 1
        args.lr_cycle = args.warm_start_epoch if args.finetune and args.warm_start else args.lr_cycle
        args.world_size = args.gpus_per_node * args.total_nodes
        args.model_time = "parity"
        return args

    def opts(self, args) -> dict:
        """The model spec as `utils/argfunc_utils.opt_parser` reads it, shrunk to the tiny model."""
        import yaml
        from original_ramit import _activation

        spec = self.folder / "my_model" / "specs" / args.task / f"{args.model_name}.yml"
        opts = {key: _activation(value) for key, value in yaml.safe_load(spec.read_text()).items()}
        if opts["mv_ver"] == 1:
            opts["exp_factor"] = opts["expand_groups"] = None
        if "gray" in args.target_mode:
            opts["in_chans"] = 1
        opts.update(dim=TINY_MODEL["embed_dim"], depths=list(TINY_MODEL["depths"]))
        return opts


class _OneProcess(nn.Module):
    """DistributedDataParallel of one process: the gradient averaged over one replica is the replica's."""

    def __init__(self, module, device_ids=None):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


class _EpochBatches:
    """What the original's `build_dataset` returns here: our batches of each epoch, chosen by `set_epoch`."""

    def __init__(self, feed: dict[int, list], patch_size: int, batch_size: int):
        self.feed, self.patch_size, self.batch_size, self.epoch = feed, patch_size, batch_size, 0
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        for _hr, lr in self.feed[epoch]:
            if lr.shape[0] != self.batch_size or lr.shape[-1] != self.patch_size:
                raise AssertionError(
                    f"epoch {epoch}: the original trains {self.batch_size} x {self.patch_size} px, our schedule "
                    f"{lr.shape[0]} x {lr.shape[-1]} px"
                )
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.feed[self.epoch])

    def __iter__(self):
        return iter(self.feed[self.epoch])


def original_state(model: nn.Module, ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our weights under the original's names, for every original parameter."""
    state = {}
    for name, _ in model.named_parameters():
        if convert_key(name) not in ours:
            raise KeyError(f"the original's {name} has no counterpart ({convert_key(name)})")
        state[name] = ours[convert_key(name)]
    return state


def train_original(code: OriginalCode, case: Case, run, batches: list[dict], work: Path) -> tuple[Trace, list[str]]:
    """The original's training of a case on our batches, from our initial weights; also notes on the set-up."""
    schedule, trace, notes = run.schedule, Trace(), []
    feed: dict[int, list] = {}
    for step, batch in enumerate(batches):
        feed.setdefault(schedule.position(step)[1], []).append((batch["labels"], batch["pixel_values"]))
    init = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    pretrain = None
    if run.recipe.init_from is not None:  # the x2 weights, under the original's names, as a .pth
        x2 = RamitForImageRestoration.from_pretrained(run.recipe.init_from)
        pretrain = str(work / "x2-init.pth")
        torch.save(_named_like_original(code, x2.state_dict()), pretrain)
    args = code.args(case.original_argv(pretrain))
    opts = code.opts(args)

    criterion_of = code.builder.build_loss_func
    half_learning_rate = code.engine.half_learning_rate

    def recording_rate(optimizer, epoch, args, *rest):
        value = half_learning_rate(optimizer, epoch, args, *rest)
        trace.lrs.append(float(optimizer.param_groups[0]["lr"]))
        return value

    code.builder.build_dataset = lambda rank, ps, bs, args: _EpochBatches(feed, ps, bs)
    code.engine.half_learning_rate = recording_rate
    (work / "original" / "logs").mkdir(parents=True, exist_ok=True)  # made by ddp_main's __main__
    try:
        # rebuild_progressive reloads the optimizer state train_one_epoch saved, whose learning rate is a numpy
        # float (half_learning_rate's); torch.load has refused such files by default since torch 2.6
        with contextlib.chdir(work / "original"), _quiet(), torch.serialization.safe_globals(_numpy_scalar_globals()):
            criterion = criterion_of(args)

            def recording_loss(output, target):
                loss = criterion(output, target)
                trace.losses.append(float(loss.detach()))
                return loss

            # ddp_main.main, for one process on the CPU
            torch.manual_seed(args.seed)
            model, optimizer, loss_scaler = code.builder.build_model_optimizer_scaler("cpu", args, opts)
            for epoch in range(args.total_epochs):
                if epoch not in feed:
                    break
                if epoch in args.progressive_epoch or epoch + 1 == args.checkpoint_epoch + 1:
                    args, train_loader, model, optimizer, loss_scaler = code.builder.rebuild_progressive(
                        "cpu", 0, args, opts, epoch + 1
                    )
                    if epoch == 0:
                        notes += _start_from(model.module, init, pretrain is not None)
                if args.finetune and args.warm_start and (epoch + 1) == args.warm_start_epoch + 1:
                    model, optimizer, loss_scaler = code.builder.rebuild_after_warm_start("cpu", args, model)
                train_loader.sampler.set_epoch(epoch)
                code.engine.train_one_epoch(
                    "cpu", 0, model, train_loader, optimizer, loss_scaler, recording_loss, epoch, args
                )
                _three_digit_names(args, epoch + 1)
    finally:
        code.engine.half_learning_rate = half_learning_rate
    trace.weights = {convert_key(k): v.detach().clone() for k, v in model.module.state_dict().items()}
    return trace, notes


def _named_like_original(code: OriginalCode, ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    args = code.args(CASES["sr-x2 L1"].original_argv())
    with contextlib.redirect_stdout(io.StringIO()):
        model = code.ramit.make_model(args, code.opts(args), 0)
    return original_state(model, ours)


def _start_from(model: nn.Module, ours: dict[str, torch.Tensor], warm_start: bool) -> list[str]:
    """Load our initial weights into the original's model. For a warm start, first check that the original loaded
    the same x2 body as ours (only the fresh heads, initialised by different random draws, differ)."""
    state = original_state(model, ours)
    notes = []
    if warm_start:
        own = dict(model.named_parameters())
        body = [n for n in state if not n.startswith("to_target")]
        if not all(torch.equal(own[n], state[n]) for n in body):
            raise AssertionError("the original's warm start loaded another body than ours")
        trainable = sorted({n.split(".")[0] for n, p in own.items() if p.requires_grad})
        notes.append(f"the original loaded the same x2 body; it trains {', '.join(trainable)} first")
    model.load_state_dict(state, strict=False)
    return notes


def _three_digit_names(args, epoch: int) -> None:
    # train_one_epoch names its checkpoints with as many digits as total_epochs has, rebuild_progressive reads them
    # back with three (the paper's runs have >= 100 epochs); the scaled runs have fewer
    digits = len(str(args.total_epochs))
    for kind, stem in (("models", "model"), ("optims", "optim")):
        folder = Path(kind) / args.model_time
        short, long = folder / f"{stem}_{str(epoch).zfill(digits)}.pth", folder / f"{stem}_{str(epoch).zfill(3)}.pth"
        if short != long and short.is_file():
            shutil.copyfile(short, long)


def _numpy_scalar_globals() -> list:
    from numpy._core.multiarray import scalar  # (numpy >= 2)

    return [scalar, np.dtype, type(np.dtype(np.float64))]


@contextlib.contextmanager
def _quiet():
    """The original's prints and progress bars, kept off the terminal."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# --------------------------------------------------------------------------------------------------
# comparing


def largest_relative(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        raise AssertionError(f"{len(a)} steps against {len(b)}")
    return max((abs(x - y) / abs(y) if y else abs(x)) for x, y in zip(a, b, strict=True))


def weights_relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest relative difference (in norm) of a weight tensor, over the tensors both hold."""
    worst = 0.0
    for name, tensor in b.items():
        if name in a and tensor.is_floating_point() and tensor.norm() > 0:
            worst = max(worst, float((a[name] - tensor).norm() / tensor.norm()))
    return worst


def compare_case(code: OriginalCode, case: Case, work: Path) -> dict:
    start = time.perf_counter()
    run = prepare_ours(case, work / "fused")
    batches = [run.trainer.train_dataset[i] for i in range(len(run.trainer.train_dataset))]
    original, notes = train_original(code, case, run, batches, work)
    ours = train_ours(run, batches)
    faithful = train_ours(prepare_ours(case, work / "faithful", computation="faithful"), batches)
    return {
        "case": case,
        "steps": len(ours.losses),
        "notes": notes,
        "loss": largest_relative(ours.losses, original.losses),
        "lr": largest_relative(ours.lrs, original.lrs),
        "weights": weights_relative(ours.weights, original.weights),
        "floor_loss": largest_relative(ours.losses, faithful.losses),
        "floor_weights": weights_relative(ours.weights, faithful.weights),
        "faithful_loss": largest_relative(faithful.losses, original.losses),
        "faithful_weights": weights_relative(faithful.weights, original.weights),
        "original": original,
        "ours": ours,
        "faithful": faithful,
        "schedule": run.schedule,
        "seconds": time.perf_counter() - start,
    }


def steps_table(rows: list[dict]) -> str:
    lines = [
        "| case | steps | ours vs original: loss | learning rate | final weights | noise floor (ours, fused vs "
        "faithful): loss | final weights | faithful vs original: loss, weights |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        floor = f"{r['floor_loss']:.1e} | {r['floor_weights']:.1e}"
        faithful = f"{r['faithful_loss']:.1e}, {r['faithful_weights']:.1e}"
        lines.append(
            f"| {r['case'].name} | {r['steps']} | {r['loss']:.1e} | {r['lr']:.1e} | {r['weights']:.1e} | {floor} | "
            f"{faithful} |"
        )
    return "\n".join(lines)


def trace_record(row: dict) -> dict:
    """For `tests/training/test_original_parity.py`: the original's learning rate at every step, and its losses of
    the first steps, with the noise floor over those steps."""
    steps = TRACE_STEPS
    return {
        "steps": row["steps"],
        "lrs": row["original"].lrs,
        "losses": row["original"].losses[:steps],
        "floor": largest_relative(row["ours"].losses[:steps], row["faithful"].losses[:steps]),
    }


def traces_json(traces: dict[str, dict]) -> str:
    """The traces as JSON, a case per line."""
    cases = ",\n".join(f"  {json.dumps(name)}: {json.dumps(record)}" for name, record in traces.items())
    return '{"cases": {\n' + cases + "\n}}\n"


# --------------------------------------------------------------------------------------------------
# the data side


def coordinate_image(size: int = 256) -> np.ndarray:
    """An HWC uint8 image whose red channel is the row and green the column of each pixel."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.stack([rows, cols, np.full_like(rows, 128)], axis=2).astype(np.uint8)


def decode_patch(target: torch.Tensor, scale: int) -> tuple[int, int, int]:
    """(top, left, orientation) of a target patch cut from `coordinate_image` and flipped / rotated: the input-side
    position, and the index of the flip and rotation (of `augment`'s 8) that turns the index grid into the patch."""
    pixels = torch.round(target[:2] * 255).to(torch.int64)
    top, left = int(pixels[0].min()) // scale, int(pixels[1].min()) // scale
    relative = pixels - pixels.flatten(1).min(dim=1).values.view(2, 1, 1)
    grid = torch.stack(torch.meshgrid(torch.arange(target.shape[1]), torch.arange(target.shape[2]), indexing="ij"))
    for index in range(8):
        flip, turns = divmod(index, 4)
        candidate = torch.rot90(grid.flip(-1) if flip else grid, turns, dims=(-2, -1))
        if torch.equal(candidate, relative):
            return top, left, index
    raise AssertionError("not a patch of the coordinate image")


def _summary(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    return f"mean {values.mean():.2f}, sd {values.std():.2f}, range {values.min():.0f}-{values.max():.0f}"


def data_table(code: OriginalCode, draws: int, work: Path) -> str:
    from ramit_hf.training.patches import RestorationPatchDataset
    from ramit_hf.training.schedule import ProgressiveSchedule
    from ramit_hf.training.sources import load_source

    patch, rows = 64, []
    image = coordinate_image()
    folders = {name: work / "data" / name for name in ("png", "hr", "lr/X2", "empty")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    from ramit_hf.protocol.resize import imresize

    Image.fromarray(image).save(folders["png"] / "coords.png")
    np.save(folders["hr"] / "coords.npy", np.ascontiguousarray(image.transpose(2, 0, 1)))
    np.save(folders["lr/X2"] / "coords.npy", np.ascontiguousarray(imresize(image, 0.5).transpose(2, 0, 1)))

    def ours_dataset(task, noise=None):
        source = load_source(folders["png"], task=task)
        schedule = ProgressiveSchedule(draws, 1, (0,), (patch,), (1,))
        return RestorationPatchDataset(source, schedule, task, seed=9725, noise_sigma=noise, image_cache_mb=16)

    torch.manual_seed(9725)
    np.random.seed(9725)
    original_sr = code.dataset.DIV2KDatasetRandomCrop(str(folders["hr"]), str(folders["lr/X2"]) + "/", patch, "parity")
    empty = str(folders["empty"])
    original_dn = code.dataset.DFBWDatasetRandomCrop(
        str(folders["hr"]), empty, empty, empty, patch, (0, 50), False, "parity"
    )
    ours_sr, ours_dn = ours_dataset("sr-x2"), ours_dataset("color-dn", (0, 50))
    drawn: dict[str, dict[str, list]] = {"original": {}, "ours": {}}
    for side, sr, dn in (("original", original_sr, original_dn), ("ours", ours_sr, ours_dn)):
        record = drawn[side]
        for i in range(draws):
            hr = sr[i][0] if side == "original" else sr.sample(0, i, patch)[1]
            top, left, orientation = decode_patch(hr, 2)
            record.setdefault("sr_top", []).append(top)
            record.setdefault("sr_left", []).append(left)
            record.setdefault("orientation", []).append(orientation)
            if side == "original":
                clean, noisy = dn[i]
            else:
                noisy, clean, _ = dn.sample(0, i, patch)
            record.setdefault("dn_top", []).append(decode_patch(clean, 1)[0])
            record.setdefault("sigma", []).append(float((noisy - clean).std() * 255))
    limit_sr, limit_dn = image.shape[0] // 2 - patch, image.shape[0] - patch
    for key, label in (
        ("sr_top", f"x2 patch row (LR, {patch} px of 128; positions 0-{limit_sr} fit)"),
        ("dn_top", f"denoising patch row ({patch} px of 256; positions 0-{limit_dn} fit)"),
        ("sigma", "noise sigma measured per patch (uniform 0-50: mean 25, sd 14.43)"),
    ):
        rows.append(f"| {label} | {_summary(drawn['original'][key])} | {_summary(drawn['ours'][key])} |")
    for side in ("original", "ours"):
        counts = np.bincount(drawn[side]["orientation"], minlength=8) / draws
        drawn[side]["orientation_text"] = ", ".join(f"{c:.3f}" for c in counts)
    rows.append(
        "| share of each of the 8 orientations (flip x rotation) | "
        f"{drawn['original']['orientation_text']} | {drawn['ours']['orientation_text']} |"
    )
    rows.append(lr_generation_row())
    rows += steps_per_epoch_rows(code)
    header = [f"| {draws} draws each | original (`dataset.py`) | ours (`RestorationPatchDataset`) |", "|---|---|---|"]
    return "\n".join(header + rows)


def lr_generation_row() -> str:
    """Our on-the-fly LR patches against the same patches cut from MATLAB's LR files of Set5 (x2, x3, x4), which is
    what the original trains on (DIV2K's MATLAB-made LR files)."""
    from ramit_hf.training.patches import RestorationPatchDataset
    from ramit_hf.training.schedule import ProgressiveSchedule
    from ramit_hf.training.sources import load_source

    set5, pixels, equal, worst = SHARED / "testsets" / "Set5", 0, 0, 0.0
    for scale in (2, 3, 4):
        task, patch = f"sr-x{scale}", 48
        sides = []
        for lq in (None, set5 / "LR_bicubic" / f"X{scale}"):
            source = load_source(set5 / "HR", lq, task=task)
            schedule = ProgressiveSchedule(500, 1, (0,), (patch,), (1,))
            sides.append(RestorationPatchDataset(source, schedule, task, seed=9725, image_cache_mb=64))
        for i in range(500):
            made, matlab = sides[0].sample(0, i, patch)[0], sides[1].sample(0, i, patch)[0]
            difference = (made - matlab).abs() * 255
            pixels += difference.numel()
            equal += int((difference < 0.5).sum())
            worst = max(worst, float(difference.max()))
    return (
        "| LR inputs (Set5 x2/x3/x4, 1500 patches of 48 px) | MATLAB's LR files | made on the fly: "
        f"{equal / pixels:.2%} of pixels equal to MATLAB's, largest difference {worst:.0f}/255 |"
    )


def steps_per_epoch_rows(code: OriginalCode) -> list[str]:
    """Steps per epoch on 2 processes for the paper's data: the original's data loader (its dataset lengths, a
    DistributedSampler, the last batch kept) against our schedule (whole batches)."""
    from ramit_hf.training.schedule import ProgressiveSchedule

    empty = tempfile.mkdtemp()
    originals = {
        "DIV2K": (code.dataset.DIV2KDatasetRandomCrop(empty, f"{empty}/X2/", 64, "parity"), 800, "sr-x2"),
        "DFBW": (
            code.dataset.DFBWDatasetRandomCrop(empty, empty, empty, empty, 64, (0, 50), False, "parity"),
            8594,
            "color-dn",
        ),
        "Rain13K": (code.dataset.DRDatasetRandomCrop(empty, empty, 64, "parity"), 13712, "derain"),
    }
    rows = []
    for data, (dataset, images, recipe_name) in originals.items():
        dataset.file_list_hq = dataset.file_list_lq = [""] * images  # the lengths of the paper's sets
        recipe = load_recipe(recipe_name)
        ours = ProgressiveSchedule(
            int(images * recipe.dataset_repeat),
            recipe.epochs,
            recipe.phase_epochs,
            recipe.patch_sizes,
            recipe.batch_sizes,
            world_size=2,
        )
        # ddp_builder.build_dataset's sampler and loader
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=2, rank=0, shuffle=True)
        for phase in ours.phases:
            loader = torch.utils.data.DataLoader(dataset, batch_size=phase.batch_size, sampler=sampler)
            rows.append(
                f"| steps per epoch: {data}, {images} images ({len(dataset)} / {ours.samples_per_epoch} patches per "
                f"epoch), 2 x {phase.batch_size} | {len(loader)} | {phase.steps_per_epoch} |"
            )
    shutil.rmtree(empty)
    return rows


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--original-code", required=True, help="a checkout of github.com/rami0205/RAMiT")
    parser.add_argument("--traces", type=Path, default=TRACES, help="where to write the original's traces")
    parser.add_argument("--cases", nargs="*", default=list(CASES), help="cases to run (default: all)")
    parser.add_argument("--draws", type=int, default=4000, help="patches drawn per side for the data table")
    parser.add_argument("--details", type=Path, help="also write every step's loss and rate of the three runs here")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (a tiny model trains fastest on one)")
    options = parser.parse_args(argv)
    torch.set_num_threads(options.threads)
    code = OriginalCode(options.original_code)
    rows, traces = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in options.cases:
            row = compare_case(code, CASES[name], Path(tmp) / name.replace(" ", "-"))
            rows.append(row)
            traces[name] = trace_record(row)
            print(f"{name}: {row['steps']} steps in {row['seconds']:.0f} s; " + "; ".join(row["notes"]), flush=True)
        if options.details is not None:
            runs = ("original", "ours", "faithful")
            details = {r["case"].name: {k: {"losses": r[k].losses, "lrs": r[k].lrs} for k in runs} for r in rows}
            options.details.write_text(json.dumps(details))
        print()
        print(steps_table(rows))
        print()
        print(data_table(code, options.draws, Path(tmp)))
    if set(options.cases) == set(CASES):
        options.traces.parent.mkdir(parents=True, exist_ok=True)
        options.traces.write_text(traces_json(traces))
        print(f"\nwrote {options.traces}")


if __name__ == "__main__":
    main()
