"""RealWorld payloads in and out.

Requests are parsed by pydantic; unknown fields are ignored rather than refused because
published RealWorld front ends send whole article objects back on update (slug, author,
dates...) and must work unchanged. Business rules (blank titles, tag limits) are checked
by the service, which answers 422 in the RealWorld shape.

Responses are plain dicts serialized by orjson: the pydantic models below document them
in OpenAPI, and the JSON builders produce exactly those shapes without per-request
validation cost.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engineroom.blog.views import ArticleView, CommentView, ProfileView
from engineroom.core.clock import isoformat_z

# ---- requests ----------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class NewArticle(_In):
    title: str | None = None
    description: str | None = None
    body: str | None = None
    tagList: list[str] | None = None
    published: bool = Field(default=True, description="Extension: false keeps the article a draft.")


class ArticleChanges(_In):
    title: str | None = None
    description: str | None = None
    body: str | None = None
    tagList: list[str] | None = None
    published: bool | None = Field(default=None, description="Extension: publish or unpublish.")


class NewArticleRequest(_In):
    article: NewArticle


class UpdateArticleRequest(_In):
    article: ArticleChanges


class NewComment(_In):
    body: str | None = None


class NewCommentRequest(_In):
    comment: NewComment


# ---- responses (documentation) ---------------------------------------------------------------


class Profile(BaseModel):
    username: str
    bio: str | None
    image: str | None
    following: bool


class ArticleSummary(BaseModel):
    slug: str
    title: str
    description: str
    tagList: list[str]
    createdAt: str
    updatedAt: str
    favorited: bool
    favoritesCount: int
    author: Profile
    published: bool | None = Field(default=None, description="Present (false) on drafts only.")


class Article(ArticleSummary):
    body: str
    bodyHtml: str = Field(description="Extension: the body as sanitized HTML.")


class SingleArticle(BaseModel):
    article: Article


class MultipleArticles(BaseModel):
    articles: list[ArticleSummary]
    articlesCount: int


class SingleProfile(BaseModel):
    profile: Profile


class Comment(BaseModel):
    id: int
    createdAt: str
    updatedAt: str
    body: str
    author: Profile


class SingleComment(BaseModel):
    comment: Comment


class MultipleComments(BaseModel):
    comments: list[Comment]


class Tags(BaseModel):
    tags: list[str]


# ---- JSON builders --------------------------------------------------------------------------


def profile_json(profile: ProfileView) -> dict[str, Any]:
    return {
        "username": profile.username,
        "bio": profile.bio,
        "image": profile.image,
        "following": profile.following,
    }


def article_json(article: ArticleView) -> dict[str, Any]:
    """One article; the body (and ``bodyHtml``) only when the view carries it."""
    data: dict[str, Any] = {
        "slug": article.slug,
        "title": article.title,
        "description": article.description,
    }
    if article.body is not None:
        data["body"] = article.body
        data["bodyHtml"] = article.body_html
    data.update(
        tagList=list(article.tag_list),
        createdAt=isoformat_z(article.created_at),
        updatedAt=isoformat_z(article.updated_at),
        favorited=article.favorited,
        favoritesCount=article.favorites_count,
        author=profile_json(article.author),
    )
    if article.is_draft:
        data["published"] = False
    return data


def comment_json(comment: CommentView) -> dict[str, Any]:
    return {
        "id": comment.id,
        "createdAt": isoformat_z(comment.created_at),
        "updatedAt": isoformat_z(comment.updated_at),
        "body": comment.body,
        "author": profile_json(comment.author),
    }
