"""The builders behind scripts/build_datasets.py: WordNet -> define-word (wordnet), SpamAssassin emails -> spam and
email-subject (emails), the splits and files (common), versions and license texts (provenance)."""
