"""Model families: one declaration each (its package's ``FAMILY``), collected here, the one place a new
family is registered. ``aigc.load``, the command line and the service read :data:`FAMILIES`."""
from . import asr, image, t2i, text, translate
from .registry import Family, Registry, TrainFlag

FAMILIES = Registry((text.FAMILY, translate.FAMILY, image.FAMILY, t2i.FAMILY, asr.FAMILY))

__all__ = ["FAMILIES", "Family", "Registry", "TrainFlag"]
