"""The scene vocabulary shared by the simulation task and the robot's simulated twin.

Instructions name colours ("put the red cube on the white plate"); the ManiSkill task
(``simbridge.training.envs``) and the franky-sim twin (``simbridge.deploy.twin``) must paint
the same names with the same RGB values, so both read them from here.
"""

from __future__ import annotations

#: Named RGB colours (0..1). Names are what instructions say.
COLOURS: dict[str, tuple[float, float, float]] = {
    # objects (train)
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.12, 0.30, 0.85),
    "yellow": (0.95, 0.85, 0.10),
    # objects (unseen)
    "purple": (0.55, 0.20, 0.75),
    "orange": (1.00, 0.50, 0.05),
    # receptacles (train / unseen)
    "white": (0.92, 0.92, 0.92),
    "gray": (0.45, 0.45, 0.48),
    "pink": (0.95, 0.55, 0.70),
    "cyan": (0.10, 0.80, 0.85),
    "black": (0.08, 0.08, 0.08),
    "brown": (0.50, 0.32, 0.18),
    # tablecloths (train / unseen)
    "beige": (0.85, 0.78, 0.62),
    "sky": (0.62, 0.76, 0.88),
    "mint": (0.66, 0.85, 0.70),
    "sand": (0.76, 0.70, 0.55),
    "crimson": (0.55, 0.05, 0.12),
    "navy": (0.08, 0.10, 0.35),
    "olive": (0.40, 0.42, 0.10),
}
