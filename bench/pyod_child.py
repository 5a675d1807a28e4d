"""Runs inside the throwaway PyOD environment (``bench.pyod_peer``): fit PyOD's AutoEncoder on
the training rows of an ``.npz`` and write its scores for the evaluation rows.

Imports only numpy, torch and pyod: this file is not part of the platform's environment.

    <env>/bin/python bench/pyod_child.py IN.npz OUT.npz HIDDEN EPOCHS BATCH
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    import numpy as np
    import torch
    from pyod.models.auto_encoder import AutoEncoder

    src, dst, hidden, epochs, batch = argv
    torch.set_num_threads(1)  # as ours trains: one thread
    data = np.load(src)
    model = AutoEncoder(hidden_neuron_list=[int(h) for h in hidden.split(",")],
                        epoch_num=int(epochs), batch_size=int(batch), verbose=0,
                        random_state=0, device="cpu")
    started = time.perf_counter()
    model.fit(data["train"])
    seconds = time.perf_counter() - started
    scores = {name: model.decision_function(data[name]) for name in data.files
              if name != "train"}
    np.savez(dst, **scores)
    import pyod

    print(json.dumps({"fit_seconds": seconds, "pyod": pyod.__version__,
                      "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
