"""The course's models in PyTorch; the Keras twins live in :mod:`course_lib.models.keras_twin`.

Lectures compare frameworks on *the same* network, so each architecture here
has a twin with the same layers and the same parameter count (a test checks).
"""

from course_lib.models.cnn import SmallCNN, small_cnn

__all__ = ["SmallCNN", "small_cnn"]
