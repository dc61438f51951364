"""notebooks/quickstart.ipynb runs top to bottom (so it never rots), shows its plots, and its
digits and 1-D signal models learn (at the shorter training of QUICKSTART_SHORT=1)."""

import os

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_executes(digits_data_dir, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", digits_data_dir)  # The digits, built.
  monkeypatch.setenv("QUICKSTART_SHORT", "1")  # 150 training steps instead of 400.
  # As a user runs it: no fake devices (set_cpu_device_count picks the cores) and optimised
  # code (training, not compiling, takes the time).
  monkeypatch.setenv("XLA_FLAGS", "")
  notebook = nbformat.read(os.path.join(REPO, "notebooks", "quickstart.ipynb"), as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}
                          ).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
  text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                 for o in outputs)
  assert "'accuracy'" in text and "M params" in text and "(1, 16)" in text
  assert "logits (1, 32, 262)" in text
  assert "maps (2, 32, 8, 8) each sums to 1.0" in text
  error = float(text.split("relative error vs transformers: ")[1].split()[0])
  assert error < 1e-4
  digits = float(text.split("digits test accuracy: ")[1].split()[0])
  assert digits > 0.35  # Chance: 0.1 (the full run: 0.92; this one about 0.6).
  signals = text.split("signals test accuracy before: ")[1].split()
  before, after = float(signals[0].rstrip(",")), float(signals[2])
  assert before < 0.35 and after > 0.5  # Chance: 0.25 (the full run: 0.90; this one 0.83).
