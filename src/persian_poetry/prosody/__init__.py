"""Metre and rhyme: the metre catalogue, the rule-based scanner, rhyme analysis, the word lexicon, the
learned metre classifier and the combined scan. Everything here but the classifier's training
(`classifier.py`) imports no torch: the classifier runs in numpy (`classifier_inference.py`)."""
