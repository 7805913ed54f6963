"""The CAD model itself: DeepCAD JSON in, OpenCASCADE solids out, and a synthetic corpus generator."""
