"""Face detection and cropping (the faces stage, and predict on new photos): detectors, geometry, batch cropping with its cache, detection statistics, contact sheets."""
