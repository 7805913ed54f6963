"""OpenECAD v2 code: the format OpenECADv2 models read and write (sketch planes, curves, loops, extrudes in millimetres)."""
