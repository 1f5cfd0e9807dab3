"""The event classes of the synthetic street scene.

Each class is a recurring kind of event with a Poisson rate, a modality
profile (audio-visual, audio-only or visual-only) and a place in the scene.
The rendering lives in :mod:`.sprites` (pictures) and :mod:`.audio` (sounds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassSpec:
    name: str
    #: mean events per hour of stream at ``rate_scale`` 1
    rate_per_hour: float
    #: "av" (seen and heard), "audio" (heard only) or "visual" (seen only)
    modality: str
    anomaly: bool = False
    description: str = ""


CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("car", 60.0, "av", description="sedan/hatchback/estate in either lane; engine + tyre noise, sometimes a horn"),
    ClassSpec("bus", 10.0, "av", description="12 m city bus, may stop at the bus stop; diesel rumble, air brakes, real pull-away recordings"),
    ClassSpec("truck", 12.0, "av", description="box truck (cab + cargo box); diesel engine + real truck pull-away recording"),
    ClassSpec("motorcycle", 12.0, "av", description="motorcycle with rider; high-revving two-stroke-like engine"),
    ClassSpec(
        "emergency_vehicle",
        4.0,
        "av",
        description="fire truck / ambulance / police car with flashing light bar; siren audible well before and after it is in view",
    ),
    ClassSpec("train", 4.0, "audio", description="off-screen train at a level crossing: crossing bells, rumble, horn; never visible"),
    ClassSpec("forklift", 6.0, "visual", description="silent electric forklift on the far sidewalk, may stop and reverse; never audible"),
    ClassSpec("glass_break", 1.5, "av", anomaly=True, description="a shop window shatters (flash, then broken pane); real glass-breaking recording"),
    ClassSpec("scream", 1.5, "av", anomaly=True, description="a person runs along the near sidewalk screaming; real scream recordings"),
    ClassSpec("speeding_car", 1.5, "av", anomaly=True, description="sports car at 80-110 km/h with engine roar and tyre skid"),
)

CLASS_BY_NAME: dict[str, ClassSpec] = {c.name: c for c in CLASSES}

#: Classes meant as anomalies (rare; ``--no-anomalies`` removes them).
ANOMALY_CLASSES: frozenset[str] = frozenset(c.name for c in CLASSES if c.anomaly)


def class_names(anomalies: bool = True) -> list[str]:
    """The class names in a fixed order (the order of :data:`CLASSES`)."""
    return [c.name for c in CLASSES if anomalies or not c.anomaly]


def class_index(name: str) -> int:
    """Stable index of a class (its position in :data:`CLASSES`), used for seeding."""
    for i, c in enumerate(CLASSES):
        if c.name == name:
            return i
    raise KeyError(f"unknown class {name!r}")
