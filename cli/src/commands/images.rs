//! `gcctl images ls|create|tag|label|rm [--sync]`.

use anyhow::Result;
use strata_store::ErrorKind;
use strata_store::images::{Descriptor, Image};

use crate::app::{Ctx, each};
use crate::args::{ImageCreateArgs, ImagesCommand};
use crate::output::{self, table};
use crate::parse::label_map;

pub fn run(ctx: &mut Ctx, cmd: &ImagesCommand) -> Result<()> {
    let scope = ctx.scope()?;
    let ns = scope.namespace();
    let images = ctx.store.images();
    match cmd {
        ImagesCommand::Ls(f) => {
            let list = images.list(ns, &f.filters)?;
            if ctx.json {
                ctx.out.json(&list)?;
            } else {
                let mut t = table(["NAME", "TYPE", "DIGEST", "SIZE", "LABELS"]);
                for i in &list {
                    t.add_row([
                        i.name.clone(),
                        i.target.media_type.clone(),
                        i.target.digest.to_string(),
                        output::size(i.target.size),
                        output::labels(&i.labels),
                    ]);
                }
                ctx.out.table(&t)?;
            }
        }
        ImagesCommand::Create(args) => {
            let image = images.create(&scope, new_image(args))?;
            print_image(ctx, &image)?;
        }
        ImagesCommand::Tag {
            source,
            destination,
            force,
        } => {
            let src = images.get(ns, source)?;
            let mut dst = Image::new(destination.clone(), src.target);
            dst.labels = src.labels;
            let image = match images.create(&scope, dst.clone()) {
                Ok(image) => image,
                Err(e) if *force && e.kind() == ErrorKind::AlreadyExists => {
                    images.update(&scope, &dst, &["target", "labels"])?
                }
                Err(e) => return Err(e.into()),
            };
            print_image(ctx, &image)?;
        }
        ImagesCommand::Label { name, labels } => {
            let mut image = images.get(ns, name)?;
            image.labels = label_map(labels);
            let paths: Vec<String> = labels.iter().map(|l| format!("labels.{}", l.key)).collect();
            let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
            let image = images.update(&scope, &image, &paths)?;
            if ctx.json {
                ctx.out.json(&image)?;
            }
        }
        ImagesCommand::Rm { names, sync } => {
            let (removed, outcome) = each(names, |name| Ok(images.delete(&scope, name)?));
            super::print_removed_then(ctx, &removed, *sync)?;
            outcome?;
        }
    }
    Ok(())
}

fn new_image(args: &ImageCreateArgs) -> Image {
    let mut image = Image::new(
        args.name.clone(),
        Descriptor {
            media_type: args.media_type.clone(),
            digest: args.target.clone(),
            size: args.size,
            annotations: label_map(&args.annotations),
        },
    );
    image.labels = label_map(&args.labels);
    image
}

fn print_image(ctx: &mut Ctx, image: &Image) -> Result<()> {
    if ctx.json {
        ctx.out.json(image)?;
    } else {
        ctx.out.line(&image.name)?;
    }
    Ok(())
}
