"""The HOG + linear SVM pre-filter: training here (`python -m cascade.train_hog`), inference in
anprd/prefilter.py."""
