"""What ships inside the package beside the code: the default model, the classifiers, the word
lexicon, the metre catalogue and the font. One place names their paths."""

from pathlib import Path

ASSETS_DIR = Path(__file__).parent
DEFAULT_MODEL_DIR = ASSETS_DIR / "default_model"
METRE_CLASSIFIER_DIR = ASSETS_DIR / "metre_classifier"
POET_CLASSIFIER_DIR = ASSETS_DIR / "poet_classifier"
LEXICON_PATH = ASSETS_DIR / "lexicon.tsv.gz"
CATALOGUE_PATH = ASSETS_DIR / "metres.json"
FONTS_DIR = ASSETS_DIR / "fonts"
FONT_PATH = FONTS_DIR / "Vazirmatn-Regular.ttf"
