"""Set heads: a padded batch of photo vectors -> one unit vector per article.

`sets` holds the `(x, mask)` batch convention, `pooling` the heads by name (mean, proj, deepsets, pma), `views`
and `classes` the parts a head can be composed with (view tags and titles as set elements; the class block).
"""
