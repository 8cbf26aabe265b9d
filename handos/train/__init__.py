"""Training of the decoder on synthetic hands (`python -m handos train --config ...`)."""
