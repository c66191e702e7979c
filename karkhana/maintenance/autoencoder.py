"""A 1-D convolutional autoencoder over sliding windows of the standardised signals.

``ConvAutoencoderDetector`` follows the shape of SKAB's Conv-AE (two strided convolutions down,
two transposed convolutions up, ReLU, dropout 0.2, Adam at 1e-3, mean squared error, batches of
32, up to 100 epochs with early stopping on the last 10 % of the windows, patience 5), with a
quarter of its channels (16 and 8 instead of 32 and 16): about 4,000 weights for 8 signals, so
a Raspberry Pi scores a row in a millisecond or so. It needs PyTorch, an optional extra::

    pip install 'karkhana[deep]'

torch is imported only when a model is trained or used, so the rest of karkhana works without.

Row ``i`` is scored with the window of ``window`` rows that ends at it (rows before the first
are taken equal to the first, so a batch needs no history). Its residual ``e`` is the newest
row of the window minus its reconstruction, and its index is the Mahalanobis distance of that
residual under the mean ``μ`` and covariance ``Σ`` of the training rows' residuals, as
Malhotra et al. (2016) score the errors of their LSTM encoder-decoder. The per-signal
contributions are ``((Σ^-1/2 (e - μ))_j)^2``: never negative, they add up to the index. SKAB's
reference instead sums the absolute error averaged over the whole window; the newest row keeps
the score causal and lets one extreme row count (the pipelines smooth scores themselves), and
whitening the residual keeps a shift of one signal visible when the network, which smooths
along time, reconstructs part of it.

Streaming: a window needs consecutive rows, so ``learn_one`` keeps the latest ``max_train``
complete rows in time order instead of the base class's reservoir sample; ``score_one`` keeps
the last ``window`` rows it scored (missing values included, imputed at scoring) and scores
the new row after them; ``explain_one`` explains the row just scored when it is given the same
row, otherwise the new row after the buffered ones without storing it. The trailing rows are
saved with the model.

Training is deterministic for a given ``seed`` (weights, batch order and dropout are drawn from
it; torch runs on one thread on the CPU while the detector trains or scores).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

from karkhana.core.errors import InvalidPayload
from karkhana.maintenance.detector import Array, Detector

CHANNELS = (16, 8)
KERNEL = 7
DROPOUT = 0.2
RIDGE = 0.01
"""Added to the residual covariance, relative to its mean variance: a signal reconstructed almost
exactly while learning does not turn rounding into alarms."""


def _torch() -> ModuleType:
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the installation
        raise InvalidPayload(
            "ConvAutoencoderDetector needs the optional extra: pip install 'karkhana[deep]'"
            " (PyTorch)"
        ) from None
    return torch


@contextmanager
def _one_thread(torch: ModuleType) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _network(torch: ModuleType, signals: int) -> Any:
    nn = torch.nn
    a, b = CHANNELS
    pad = KERNEL // 2
    return nn.Sequential(
        nn.Conv1d(signals, a, KERNEL, stride=2, padding=pad),
        nn.ReLU(),
        nn.Dropout(DROPOUT),
        nn.Conv1d(a, b, KERNEL, stride=2, padding=pad),
        nn.ReLU(),
        nn.ConvTranspose1d(b, b, KERNEL, stride=2, padding=pad, output_padding=1),
        nn.ReLU(),
        nn.Dropout(DROPOUT),
        nn.ConvTranspose1d(b, a, KERNEL, stride=2, padding=pad, output_padding=1),
        nn.ReLU(),
        nn.ConvTranspose1d(a, signals, KERNEL, padding=pad),
    )


def windows(z: Array, window: int) -> Array:
    """The window of ``window`` rows ending at each row, shaped (rows, signals, window); rows
    before the first are taken equal to the first."""
    padded = np.concatenate([np.repeat(z[:1], window - 1, axis=0), z], axis=0)
    view = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)
    return np.ascontiguousarray(view, dtype=np.float32)


class ConvAutoencoderDetector(Detector):
    """Squared reconstruction error of the newest row of a window, by a small convolutional
    autoencoder trained on the standardised normal rows (see the module's docstring)."""

    def __init__(
        self,
        signals: Sequence[str] | None = None,
        *,
        window: int = 60,
        epochs: int = 100,
        patience: int = 5,
        batch: int = 32,
        learning_rate: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(signals, **kwargs)
        if window < 4:
            raise ValueError("window must be at least 4 rows")
        self.window = window
        self.epochs = epochs
        self.patience = patience
        self.batch = batch
        self.learning_rate = learning_rate
        self.weights: dict[str, Array] = {}
        self.epochs_run = 0
        self.res_mean: Array = np.zeros(0)
        self.res_whiten: Array = np.zeros((0, 0))
        self._net: Any = None
        self._recent: list[list[float]] = []

    def params(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "epochs": self.epochs,
            "patience": self.patience,
            "batch": self.batch,
            "learning_rate": self.learning_rate,
        }

    # -- the model proper -------------------------------------------------------------------
    def _fit_z(self, z: Array) -> None:
        torch = _torch()
        with _one_thread(torch):
            torch.manual_seed(self.seed)
            net = _network(torch, z.shape[1])
            x = torch.from_numpy(windows(z, self.window))
            n_val = len(x) // 10 if len(x) >= 50 else 0
            train, val = x[: len(x) - n_val], x[len(x) - n_val :]
            optimiser = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
            order = torch.Generator().manual_seed(self.seed)
            best, best_state, waited, run = float("inf"), None, 0, 0
            for _ in range(self.epochs):
                run += 1
                net.train()
                for idx in torch.randperm(len(train), generator=order).split(self.batch):
                    batch = train[idx]
                    optimiser.zero_grad()
                    loss = torch.mean((net(batch)[..., : self.window] - batch) ** 2)
                    loss.backward()
                    optimiser.step()
                if n_val == 0:
                    continue
                net.eval()
                with torch.no_grad():
                    val_loss = float(torch.mean((net(val)[..., : self.window] - val) ** 2))
                if val_loss < best:
                    best, waited = val_loss, 0
                    best_state = {k: v.clone() for k, v in net.state_dict().items()}
                else:
                    waited += 1
                    if waited >= self.patience:
                        break
            if best_state is not None:
                net.load_state_dict(best_state)
            net.eval()
        self.epochs_run = run
        self._net = net
        self.weights = {
            k: v.detach().numpy().astype(np.float64) for k, v in net.state_dict().items()
        }
        residual = self._residuals(windows(z, self.window))
        self.res_mean = residual.mean(axis=0)
        cov = np.cov(residual, rowvar=False).reshape(z.shape[1], z.shape[1])
        ridge = RIDGE * max(float(np.mean(np.diag(cov))), 1e-12)
        values, vectors = np.linalg.eigh(cov + ridge * np.eye(len(cov)))
        self.res_whiten = np.asarray((vectors / np.sqrt(values)) @ vectors.T)

    def _residuals(self, w: Array) -> Array:
        """Reconstruction residual of the newest row of each window (rows, signals)."""
        if self._net is None:
            raise InvalidPayload("the detector has not learned anything yet")
        torch = _torch()
        with _one_thread(torch), torch.no_grad():
            out = self._net(torch.from_numpy(w))[:, :, self.window - 1].numpy()
        return np.asarray(w[:, :, -1] - out.astype(np.float64), dtype=np.float64)

    def _errors(self, z: Array, last_only: bool = False) -> Array:
        """Per-signal parts of each row's index (or only the last row's): the squared whitened
        residual ``((Σ^-1/2 (e - μ))_j)^2``, which adds up to the residual's Mahalanobis
        distance."""
        w = windows(z, self.window)
        if last_only:
            w = w[-1:]
        return np.asarray(((self._residuals(w) - self.res_mean) @ self.res_whiten) ** 2)

    def _index(self, z: Array) -> Array:
        return np.asarray(self._errors(z).sum(axis=1))

    def _contrib(self, z: Array) -> Array:
        return self._errors(z)

    def n_parameters(self) -> int:
        return int(sum(v.size for v in self.weights.values()))

    # -- persistence ------------------------------------------------------------------------
    def _state(self) -> dict[str, Array]:
        recent = np.array(self._recent, dtype=np.float64).reshape(-1, len(self.signals))
        return {
            "recent": recent,
            "epochs_run": np.array([self.epochs_run], dtype=np.float64),
            "res_mean": self.res_mean,
            "res_whiten": self.res_whiten,
            **{f"w_{k}": v for k, v in self.weights.items()},
        }

    def _load_state(self, arrays: Mapping[str, Array]) -> None:
        self._recent = arrays["recent"].tolist() if "recent" in arrays else []
        if "epochs_run" in arrays:
            self.epochs_run = int(arrays["epochs_run"][0])
        if "res_mean" in arrays:
            self.res_mean, self.res_whiten = arrays["res_mean"], arrays["res_whiten"]
        self.weights = {k[2:]: v for k, v in arrays.items() if k.startswith("w_")}
        if not self.weights:
            return
        torch = _torch()
        net = _network(torch, len(self.signals))
        net.load_state_dict(
            {k: torch.from_numpy(v.astype(np.float32)) for k, v in self.weights.items()}
        )
        net.eval()
        self._net = net

    # -- streaming --------------------------------------------------------------------------
    def learn_one(self, x: Mapping[str, float | None]) -> None:
        """Add one row of normal behaviour; the latest ``max_train`` complete rows are kept in
        time order (windows need consecutive rows)."""
        if not self.signals:
            self.signals = tuple(sorted(x))
        row = self._row(x)
        if np.isnan(row).any():
            return
        self._seen += 1
        self._buffer.append(list(row))
        if len(self._buffer) > self.max_train:
            del self._buffer[0]

    def score_one(self, x: Mapping[str, float | None]) -> float:
        """Score of one row after the rows scored before it (0.0 until enough were learned)."""
        if not self._ready():
            return 0.0
        self._recent.append(list(self._row(x)))
        del self._recent[: max(0, len(self._recent) - self.window)]
        z = self._standardise(self._matrix(np.array(self._recent)))
        return float(self._errors(z, last_only=True).sum() / self.threshold)

    def explain_one(self, x: Mapping[str, float | None]) -> dict[str, float]:
        """Share of each signal in the score of the row just scored (if ``x`` is that row), or
        of ``x`` after the rows scored so far."""
        if not self._ready():
            return dict.fromkeys(self.signals, 0.0)
        row = self._row(x)
        recent = list(self._recent)
        if not recent or not np.array_equal(np.array(recent[-1]), row, equal_nan=True):
            recent = [*recent[max(0, len(recent) - (self.window - 1)) :], list(row)]
        data = self._matrix(np.array(recent))
        parts = self._errors(self._standardise(data), last_only=True)[0]
        parts[np.isnan(data[-1])] = 0.0
        total = parts.sum()
        shares = parts / total if total > 0 else np.zeros_like(parts)
        return {s: float(v) for s, v in zip(self.signals, shares, strict=True)}
