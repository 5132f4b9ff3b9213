"""The metamorphic network itself: the INR (inr.py) that maps a weight's coordinates
(coords.py) to its value, the network it generates at any width (metamorphic.py), the
teacher's smoothing into a function the INR can fit (smoothing.py), and the generation cache and
compilation that make every width cheap (cache.py, compilation.py)."""
