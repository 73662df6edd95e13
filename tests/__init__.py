"""trace-reclaim's tests, in three tiers: unit/ (pure, no root), replay/ (real
recordings in fixtures/, no root) and live/ (real BPF programs, real workloads, root)."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
