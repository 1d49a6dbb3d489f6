"""Set heads: a padded batch of photo vectors -> one unit vector per article.

A head is parts put together (`model.ArticleHead`): elements (`elements`: view tags, the title) -> pooling
(`pooling`, by name: mean, proj, deepsets, pma) -> extensions (`classes`: the class block), each part with its own
config entry (`parts`). `sets` holds the `(x, mask)` batch convention, `views` the view tags as ids.
"""
