"""Titles, the text beside an article's photos: title encoders by name (`encoders`: tfidf, clip-text, minilm), the
title-vector cache (`vectors`), and late fusion of photo and title vectors (`fusion`)."""
