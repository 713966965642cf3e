"""The blog's errors: stable codes, RealWorld statuses (401/403/404/422)."""

from __future__ import annotations

from engineroom.core.errors import AppError, Forbidden, NotFound


class ArticleNotFound(NotFound):
    code = "blog_article_not_found"


class CommentNotFound(NotFound):
    code = "blog_comment_not_found"


class ProfileNotFound(NotFound):
    code = "blog_profile_not_found"


class NotArticleAuthor(Forbidden):
    code = "blog_not_article_author"


class NotCommentAuthor(Forbidden):
    code = "blog_not_comment_author"


class InvalidInput(AppError):
    """A payload that parses but breaks a rule (blank title, too many tags...)."""

    code = "validation_failed"
    status = 422


class CannotFollowSelf(InvalidInput):
    code = "blog_cannot_follow_self"
