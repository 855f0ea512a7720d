"""Metre and rhyme: the metre catalogue, the rule-based scanner, rhyme analysis, the word lexicon, the
learned metre classifier and the combined scan. The rule-based parts import no torch."""
